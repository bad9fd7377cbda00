"""What the CLI commands share beyond their arguments: output-folder checks, run.json, the scorers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def scorers(args: argparse.Namespace) -> tuple[Any, Any]:
    """The toxicity scorer (saying which one runs) and the open_clip scorer (None, with a warning, when
    unavailable), as the command's arguments name them."""
    from .rewards.scorers import ScorerSpec, load_scorers

    spec = ScorerSpec.for_model(args.model, args.clip, args.detoxify_checkpoint, args.detoxify_config)
    toxicity, clip, clip_error = load_scorers(spec)
    if clip_error is not None:
        print(f"warning: no visual-consistency score ({spec.clip}: {clip_error})", file=sys.stderr)
    print(f"toxicity scorer: {toxicity.name}" + (f" [{toxicity.note}]" if toxicity.note else ""))
    return toxicity, clip


def check_out(out: str, kind: str, overwrite: bool, resume: bool = False) -> None:
    """Before any work: --out must be a new or empty folder (or --overwrite); --resume needs a Stage II
    checkpoint there (stage2) or an interrupted evaluation (eval). Nothing another command made is replaced
    by accident."""
    import json

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    made_by = None
    if (path / "run.json").is_file():
        try:
            made_by = json.loads((path / "run.json").read_text(encoding="utf-8")).get("kind")
        except (json.JSONDecodeError, AttributeError):
            made_by = "unknown"
    elif (path / "config.json").is_file() and (path / "metrics.jsonl").exists():
        made_by = "stage2"
    interrupted = sorted(path.glob("partial-*.jsonl")) if path.is_dir() else []
    if resume and kind == "eval":
        if not interrupted:
            raise ValueError(f"--resume: {out} holds no interrupted evaluation (no partial-*.jsonl); drop --resume "
                             "to start one there")
        return
    if interrupted and kind == "eval" and not overwrite:
        raise FileExistsError(f"--out {out} holds an interrupted evaluation; pass --resume to continue it (same "
                              "settings), --overwrite to start again, or choose a new folder (nothing was changed)")
    if resume:
        if made_by != "stage2" or not (path / "checkpoint.safetensors").is_file():
            raise ValueError(f"--resume: {out} holds no Stage II checkpoint to continue; drop --resume to start a "
                             "new run there")
        return
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        what = f"a {made_by} run" if made_by else "files"
        raise FileExistsError(f"--out {out} already holds {what}; choose a new folder"
                              + ("" if kind == "stage2" else " or pass --overwrite") + " (nothing was changed)")


def write_run_info_for(out: str, kind: str, args: argparse.Namespace, **settings: object) -> None:
    """run.json: what made this folder, so `notebook --run` can reproduce it."""
    from .runs import write_run_info

    write_run_info(Path(out), {"kind": kind, "model": args.model, "data": args.data, **settings})
