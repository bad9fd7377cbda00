"""A runs folder: every Stage I, Stage II, evaluation and comparison run gets its own folder and survives restarts.

Run ids are generated here (`<kind>-<date>-<time>-<4 hex>`) and validated on the way back in, so a
request can only name a folder inside the runs folder; nothing is ever overwritten.
"""

from __future__ import annotations

import builtins
import functools
import importlib.metadata
import json
import platform
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from .io import atomic_write_text
from .runlock import RunLock

KINDS = ("stage1", "stage2", "eval", "compare", "attack", "reproduce")
_RUN_ID = re.compile(r"^(stage1|stage2|eval|compare|reproduce|attack)-\d{8}-\d{6}-[0-9a-f]{4}$")
RUN_INFO = "run.json"
STAGING = ".staging"  # runs being made, listed nowhere until published


def run_kind(run_id: str) -> str:
    """stage1, stage2, eval or compare, read from a run id (refuses anything that is not one)."""
    match = _RUN_ID.match(run_id) if isinstance(run_id, str) else None
    if match is None:
        raise ValueError(f"{run_id!r} is not a run id (expected e.g. stage1-20260101-120000-ab12)")
    return match.group(1)


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """What code made a result: the workbench's git commit (with "+dirty" for uncommitted changes, or why it
    is unknown), Python and the versions of the packages that shape the numbers."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (not a git checkout)"
    versions: dict[str, str | None] = {}
    for package in ("torch", "transformers", "nnsight", "detoxify", "open_clip_torch", "vlm-steering-workbench"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"git_commit": commit, "python": platform.python_version(), "packages": versions}


def caption(info: dict) -> str:
    """One line naming what produced a figure, from a run.json or an evaluation's settings: run, model, data and n,
    steering, judge and the code's commit. Keys a run lacks are left out, never guessed."""
    commit = str((info.get("provenance") or {}).get("git_commit") or "")[:12]
    layers = info.get("layers")
    steering = (f"{info['mode']} α={info.get('alpha')} layers {','.join(map(str, layers)) if layers else 'all'}"
                if info.get("mode") else None)
    n = info.get("records") or info.get("limit")
    parts = [f"run {info['id']}" if info.get("id") else None, f"model {info['model']}" if info.get("model") else None,
             f"data {info['data']}" + (f" (n={n})" if n else "") if info.get("data") else None,
             f"vectors of {info['vectors_run']}" if info.get("vectors_run") else None, steering,
             f"from {info['source_run']}" if info.get("source_run") else None,
             f"ASR judge {info['asr_judge']}" if info.get("asr_judge") else None,
             f"workbench {commit}" if commit else None]
    return " · ".join(part for part in parts if part)


def write_run_info(folder: Path, info: dict) -> None:
    """Write a run folder's run.json (atomically): what made the run, for reopening and notebooks, and the
    provenance of the code that made it."""
    atomic_write_text(folder / RUN_INFO, json.dumps({**info, "provenance": info.get("provenance") or provenance()},
                                                    indent=2))


class RunStore:
    """Create, list and reopen run folders under `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, kind: str, info: dict, staged: bool = False) -> tuple[str, Path]:
        """A new, empty run folder with its run.json; returns (run id, folder). A `staged` run is made in
        `.staging/` (named by its id, so what it records about its folder is the same) where no picker lists it,
        until `publish` moves it in: a job whose output is only useful whole (Stage I, an evaluation in the app)
        never shows half-made."""
        if kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r}; use one of {', '.join(KINDS)}")
        parent = self.root / STAGING if staged else self.root
        parent.mkdir(exist_ok=True)
        while True:
            run_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            folder = parent / run_id
            if (self.root / run_id).exists():
                continue
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        write_run_info(folder, {"kind": kind, "id": run_id, **info})
        return run_id, folder

    def publish(self, run_id: str) -> Path:
        """Move a staged run into the runs folder, where pickers list it; returns its folder."""
        run_kind(run_id)
        target = self.root / run_id
        (self.root / STAGING / run_id).rename(target)
        return target

    def discard(self, run_id: str) -> None:
        """Remove a staged run (a job that failed or was cancelled before it made anything whole)."""
        run_kind(run_id)
        shutil.rmtree(self.root / STAGING / run_id, ignore_errors=True)

    def path(self, run_id: str) -> Path:
        """The folder of `run_id`; refuses anything that is not a run id of this store."""
        run_kind(run_id)  # validates the id
        folder = self.root / run_id
        if not (folder / RUN_INFO).is_file():
            raise ValueError(f"run {run_id} does not exist in the runs folder")
        return folder

    def info(self, run_id: str) -> dict:
        """run.json, with a "running" status corrected to "interrupted" when no process writes the run any more
        (a job killed mid-way cannot say so itself)."""
        folder = self.path(run_id)
        info = json.loads((folder / RUN_INFO).read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError(f"run {run_id} has a damaged run.json (not an object)")
        if info.get("status") == "running" and RunLock(folder).owner() is None:
            info["status"] = "interrupted (its process stopped; resume it)"
        return info

    def update(self, run_id: str, **fields: object) -> None:
        """Add fields to run.json (e.g. a status or a summary), atomically."""
        info = self.info(run_id)
        info.update(fields)
        write_run_info(self.path(run_id), info)

    def list(self, kind: str | None = None) -> list[str]:
        """Run ids, newest first, optionally of one kind."""
        ids = [p.name for p in self.root.iterdir() if _RUN_ID.match(p.name) and (p / RUN_INFO).is_file()]
        ids = [i for i in ids if kind is None or run_kind(i) == kind]
        return sorted(ids, key=lambda i: i.split("-", 1)[1], reverse=True)

    def choices(self, kind: str | None = None, model: str | None = None) -> builtins.list[tuple[str, str]]:
        """(label, id) pairs for a dropdown: the id plus the run's model, data and status; only runs of
        `model` when given."""
        result = []
        for run_id in self.list(kind):
            try:
                info = self.info(run_id)
            except ValueError:  # a damaged run.json must not hide every other run from the pickers
                result.append((f"{run_id} · damaged run.json", run_id))
                continue
            if model is not None and info.get("model") != model:
                continue
            label = f"{run_id} · {info.get('model', '?')} · {info.get('data', '?')}"
            if info.get("status"):
                label += f" · {info['status']}"
            result.append((label, run_id))
        return result
