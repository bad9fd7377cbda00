"""The Stage I job: a spec and a run folder in, directions, layer scores and run.json out (CLI and app alike)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.distributed import SINGLE, Shard
from ..core.jobs import write_job_info
from ..core.models import VLM
from ..core.progress import ProgressFn
from ..core.records import Record
from ..core.runlock import RunLock
from .activations import POSITIONS
from .directions import METHODS
from .pipeline import Stage1Result, run_stage1
from .presets import get_preset


@dataclass(frozen=True)
class Stage1Spec:
    """What a user chose for a Stage I run."""

    model: str
    data: str
    position: str = "last"
    method: str = "mean_diff"
    batch_size: int = 8
    preset: str = "workbench"  # stage1/presets.py: workbench (the project's own) or astra

    def __post_init__(self) -> None:
        get_preset(self.preset)  # names the known presets
        if self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}; use one of {', '.join(POSITIONS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown direction method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.batch_size < 1:
            raise ValueError(f"the batch size must be at least 1, got {self.batch_size}")


def run_stage1_job(spec: Stage1Spec, folder: str | Path, vlm: VLM, records: Sequence[Record],
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None, show_bar: bool = True,
                   shard: Shard = SINGLE) -> tuple[Stage1Result, dict[str, Path]]:
    """Capture, directions and scores for `records` (loaded from `spec.data`), written to `folder` with run.json;
    under torchrun every rank captures its share and rank 0 writes (the others get no paths)."""
    paths: dict[str, Path] = {}
    with RunLock(folder) if shard.is_main else contextlib.nullcontext():  # one writer for as long as it runs
        result = run_stage1(vlm, records, spec.position, spec.method, spec.batch_size,  # type: ignore[arg-type]
                            progress=progress, cancel=cancel, show_bar=show_bar, shard=shard, preset=spec.preset)
        if shard.is_main:
            paths = result.save(folder)
            write_job_info(folder, "stage1", spec, records=len(records),
                           suggested_layers=result.suggested_layers(), processes=shard.world,
                           steering=result.vector.metadata.get("steering"))
    shard.done()
    return result, paths
