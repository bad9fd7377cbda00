"""Stage I: activations captured with nnsight (`activations`), per-layer directions (`directions`), how well each
layer separates harmful from benign (`separation`), Stage I end to end as a library call (`pipeline.run_stage1`)
and as a job that writes a run folder (`job`, shared by the CLI and the app).
"""
