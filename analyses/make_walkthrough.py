"""Regenerate the executed walkthrough notebook on the organism: `python analyses/make_walkthrough.py`.

Runs Stage I on `organism:train` into analyses/walkthrough_run/, then exports and executes the
analysis notebook analyses/walkthrough.ipynb (about 30 s on a 2-core CPU, no network).
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.cli.main import main

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    run = HERE / "walkthrough_run"
    code = main(["stage1", "--model", "organism", "--data", "organism:train", "--out", str(run), "--overwrite"])
    if code == 0:
        code = main(["notebook", "--run", str(run), "--out", str(HERE / "walkthrough.ipynb"), "--execute"])
    sys.exit(code)
