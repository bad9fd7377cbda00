"""Evaluation: unsteered vs steered generations judged (`evaluation`), who decides attack success (`judges`, the
ASR-judge registry and `choose_judge`), the report (`report`), the defence-comparison table (`compare`), an
evaluation's judged responses streamed to disk for resume (`stream`), and the eval and compare jobs the CLI and
the app share (`job`).
"""
