"""Stage II: refine the steering vectors, model frozen, by preference optimisation on the model's own samples. The
loss (DPO, GRPO and the objective registry) is in `objectives`; the loop in `loop` (`Stage2Run`, `Stage2Config`);
the run folder's files in `store`; the job the CLI and the app share in `job`.
"""
