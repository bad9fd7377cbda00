"""One command, one paper table: a recipe (TOML: model, training data, attacks, sets, defences, seeds) run step by
step through the job pipelines (`recipe.py`, `steps.py`), each step a run folder that a rerun skips, then the table,
figure and notebook (`table.py`); `job.py` is the job the CLI calls."""
