"""The Stage II job: a spec and a run folder in, refined vectors, metrics and run.json out (CLI and app alike)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.distributed import SINGLE, Shard
from ..core.jobs import write_job_info
from ..core.models import VLM
from ..core.progress import ProgressFn
from ..core.records import Record
from ..rewards.combined import RewardModel
from ..rewards.toxicity import ToxicityScorer
from ..rewards.visual import ClipScorer
from ..steer.vectors import SteeringVector
from .loop import Stage2Config, Stage2Run, StepMetrics


@dataclass(frozen=True)
class Stage2Spec:
    """What a user chose for a Stage II run: the model, the data, the Stage I vectors it starts from (a file, and
    the app's run id when they come from a runs folder) and the training settings."""

    model: str
    data: str
    vectors: str
    config: Stage2Config
    source_run: str | None = None


def run_stage2_job(spec: Stage2Spec, folder: str | Path, vlm: VLM, records: Sequence[Record],
                   scorers: tuple[ToxicityScorer, ClipScorer | None], resume: bool = False,
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                   on_step: Callable[[StepMetrics], None] | None = None, show_bar: bool = True,
                   shard: Shard = SINGLE) -> SteeringVector:
    """Train (or resume) Stage II in `folder`; run.json says running, then finished or where it stopped. Under
    torchrun every rank samples its share and rank 0 writes."""
    vector = SteeringVector.load(spec.vectors)
    vector.check_compatible(vlm)
    toxicity, clip = scorers
    trainer = Stage2Run(vlm, vector, records, RewardModel(toxicity, clip, spec.config.weights), spec.config, folder,
                        resume, shard=shard)

    def status(text: str) -> None:
        if shard.is_main:
            write_job_info(folder, "stage2", spec, status=text, steps=spec.config.steps,
                           toxicity_scorer=toxicity.name, clip=clip.name if clip else None, processes=shard.world)

    if shard.is_main:
        trainer.lock.check_free()  # another writer: refused before run.json is touched
    status("running")
    try:
        refined = trainer.run(progress=progress, cancel=cancel, on_step=on_step, show_bar=show_bar)
    except BaseException as error:
        status(f"stopped at step {trainer.step} ({type(error).__name__})")
        raise
    status("finished")
    shard.done()
    return refined
