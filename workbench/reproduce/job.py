"""The reproduce job: a recipe and an output folder in; every step's run folder, then table.json/.csv/.md, the
figure, the notebook and run.json out (the CLI calls it; the app can too)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..core.jobs import write_job_info
from ..core.models import VLM
from ..core.progress import ProgressFn
from ..rewards.toxicity import ToxicityScorer
from ..rewards.visual import ClipScorer
from .recipe import Recipe, RecipeError
from .steps import Log, Runner, run_steps
from .table import build_table, write_outputs


def check_reproduce_out(out: str | Path, recipe: Recipe, resume: bool) -> None:
    """A new or empty folder, or (--resume) one this recipe started: its saved recipe.toml is the same file."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise RecipeError(f"--out {out} is a file; give a folder")
    saved = folder / "recipe.toml"
    if resume:
        if not saved.is_file():
            raise RecipeError(f"--resume: {out} holds no reproduce run (no recipe.toml); drop --resume to start one")
        if saved.read_text(encoding="utf-8") != recipe.text:
            raise RecipeError(f"--resume: {out} was started with another recipe (its recipe.toml differs from "
                              f"{recipe.path} with these variables); use a new --out (nothing was changed)")
    elif folder.is_dir() and any(folder.iterdir()):
        raise RecipeError(f"--out {out} is not empty; pass --resume to continue the run there, or choose a new "
                          "folder (nothing was changed)")


def run_reproduce_job(recipe: Recipe, out: str | Path, vlm: VLM, scorers: tuple[ToxicityScorer, ClipScorer | None],
                      command: str, log: Log = print, cancel: threading.Event | None = None, show_bar: bool = True,
                      plots: bool = True, progress: ProgressFn | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run (or continue) every step of `recipe` in `out`, then write the table; returns (table, paths)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "recipe.toml").is_file():  # a resumed run's was checked equal (check_reproduce_out)
        (folder / "recipe.toml").write_text(recipe.text, encoding="utf-8")
    runner = Runner(recipe, folder, vlm, scorers, log, progress, cancel, show_bar)
    evals = run_steps(runner)
    table = build_table(recipe, evals, folder)
    paths = write_outputs(table, folder, command, plots)
    write_job_info(folder, "reproduce", recipe, data=f"recipe {recipe.name}", status="finished",
                   toxicity_scorer=scorers[0].name,
                   clip=scorers[1].name if scorers[1] else None, outputs=sorted(p.name for p in paths.values()))
    return table, paths
