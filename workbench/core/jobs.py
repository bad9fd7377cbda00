"""What every job (Stage I, Stage II, eval, compare) shares, whichever shell starts it: the output-folder check, the
run.json it writes, and how a record limit samples a data set.

A job is one function taking a typed spec (a frozen dataclass of what a user chose), a run folder and the loaded
model; the CLI turns arguments into the spec and the app turns widgets into it, so both run the same code and
write the same files (`stage1/job.py`, `stage2/job.py`, `evaluate/job.py`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .runs import RUN_INFO, write_run_info


def check_out(out: str | Path, kind: str, overwrite: bool, resume: bool = False) -> None:
    """Before any work: `out` must be a new or empty folder (or `overwrite`); `resume` needs a Stage II
    checkpoint there (stage2) or an interrupted evaluation (eval). Nothing another run made is replaced
    by accident."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    made_by = None
    if (path / RUN_INFO).is_file():
        try:
            made_by = json.loads((path / RUN_INFO).read_text(encoding="utf-8")).get("kind")
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


def spec_fields(spec: Any) -> dict[str, Any]:
    """A spec's fields as JSON values (tuples as lists), the part of run.json a user chose."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def write_job_info(folder: str | Path, kind: str, spec: Any, **results: Any) -> None:
    """run.json of a job: its kind, every field of its spec, what it found (`results`) and the code's provenance.
    A run id given by the app's runs folder (`id`) is kept; every other key is this job's."""
    path = Path(folder)
    kept: dict[str, Any] = {}
    if (path / RUN_INFO).is_file():
        try:
            old = json.loads((path / RUN_INFO).read_text(encoding="utf-8"))
            kept = {"id": old["id"]} if isinstance(old, dict) and "id" in old else {}
        except json.JSONDecodeError:
            kept = {}
    write_run_info(path, {"kind": kind, **kept, **spec_fields(spec), **results})
