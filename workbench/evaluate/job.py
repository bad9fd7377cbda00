"""The eval and compare jobs: a spec and a run folder in, judged generations, metrics and run.json out.

The CLI and the app both build an `EvalSpec` (or `CompareSpec`) and call the job, so an evaluation made in the
browser has the CLI's run lock, its streamed `partial-*.jsonl` (resumable), the same record sample, judge choice,
provenance and run.json.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.distributed import SINGLE, Shard
from ..core.jobs import write_job_info
from ..core.models import VLM
from ..core.progress import ProgressFn
from ..core.records import Record, dataset_hash
from ..core.runlock import RunLock
from ..core.runs import provenance
from ..core.sampling import METHOD, composition, stratified_sample
from ..rewards.toxicity import ToxicityScorer
from ..rewards.visual import ClipScorer
from ..steer.steering import Steering, steering_for
from ..steer.vectors import SteeringVector
from .compare import Defence, run_compare, save
from .evaluation import EvalConfig, Evaluation, evaluate
from .judges import choose_judge, choose_toxicity_judge
from .stream import EvalStream

EVAL = EvalConfig()
Log = Callable[[str], None]


@dataclass(frozen=True)
class SteeringChoice:
    """How to steer a vector file; None for a setting means the vector's recorded one, else the default."""

    mode: str | None = None
    alpha: float | None = None
    layers: tuple[int, ...] | None = None
    steer_at: str | None = None

    def apply(self, vector: SteeringVector) -> tuple[Steering, str]:
        return steering_for(vector, self.mode, self.alpha, self.layers, self.steer_at)


@dataclass(frozen=True)
class EvalSpec:
    """What a user chose for an evaluation: unsteered vs steered with the vectors in `vectors` (none: unsteered
    only) on `limit` records of `data` (None: all), a seeded sample stratified by label, source and behaviour
    (`core.sampling`)."""

    model: str
    data: str
    vectors: str | None = None
    vectors_run: str | None = None  # the app's run id the vectors come from, for captions
    steering: SteeringChoice = SteeringChoice()
    judge: str = "auto"
    limit: int | None = None
    max_new_tokens: int = EVAL.max_new_tokens
    batch_size: int | str = "auto"
    allow_overlap: bool = False
    plots: bool = True
    toxicity_judge: str = "auto"  # the independent toxicity judge (`judges.TOXICITY_JUDGES`)
    system_prompt: str | None = None  # put before every prompt (the non-steering baseline defence)
    baseline: bool = True  # False: the steered condition only (a table that already has the unsteered run)

    def __post_init__(self) -> None:
        _check_counts(self.limit, self.max_new_tokens)
        choose_toxicity_judge(self.toxicity_judge, self.data)  # an unknown name fails before the model loads


def _check_counts(limit: int | None, max_new_tokens: int) -> None:
    """Refuse a record limit or a token budget below 1 before any model loads."""
    if limit is not None and limit < 1:
        raise ValueError(f"the record limit must be at least 1, got {limit}")
    if max_new_tokens < 1:
        raise ValueError(f"generate at least 1 new token, got {max_new_tokens}")


@dataclass
class EvalOutcome:
    """What an evaluation job made (rank 0: `paths` and `metrics`; the other ranks of a torchrun get None)."""

    evaluation: Evaluation
    metrics: dict | None
    paths: dict[str, Path]


def run_eval_job(spec: EvalSpec, folder: str | Path, vlm: VLM, records: Sequence[Record],
                 scorers: tuple[ToxicityScorer, ClipScorer | None], resume: bool = False,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None, show_bar: bool = True,
                 shard: Shard = SINGLE, log: Log | None = None) -> EvalOutcome:
    """Evaluate `spec` on `records` (loaded from `spec.data`) into `folder`: judged responses streamed to
    `partial-<rank>.jsonl` as each batch finishes (`resume` continues them, same settings only), then
    metrics.json, generations.jsonl, report.md, figures and run.json."""
    say = log or (lambda line: None)
    total = len(records)
    records = stratified_sample(records, spec.limit)
    if len(records) < total:
        say(f"records: {len(records)} of {total}, {METHOD} (seed 0)")
    vector = SteeringVector.load(spec.vectors) if spec.vectors else None
    steering = None
    if vector is not None:
        vector.check_compatible(vlm)
        steering, note = spec.steering.apply(vector)
        say(note)
    judge = choose_judge(spec.judge, spec.data, vector.metadata if vector is not None else None)
    say(f"ASR judge: {judge.name}")
    toxic_judge = choose_toxicity_judge(spec.toxicity_judge, spec.data)
    toxicity, clip = scorers
    config = EvalConfig(max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
                        system_prompt=spec.system_prompt)
    data_hash = dataset_hash(records)
    fingerprint = {"model": vlm.spec, "data": spec.data, "data_hash": data_hash, "records": len(records),
                   "vectors": vector.fingerprint() if vector is not None else None,
                   "steering": steering.describe() if steering else None, "asr_judge": judge.name,
                   "toxicity_scorer": toxicity.name, "clip": clip.name if clip else None,
                   "max_new_tokens": config.max_new_tokens, "seed": config.seed,
                   "system_prompt": config.system_prompt, "allow_overlap": spec.allow_overlap,
                   "toxicity_judge": toxic_judge.name if toxic_judge else None, "baseline": spec.baseline}
    out = Path(folder)
    if not resume and shard.is_main:
        for stale in out.glob("partial-*.jsonl"):  # a folder the caller let us overwrite
            stale.unlink()
    with RunLock(out) if shard.is_main else contextlib.nullcontext():
        stream = EvalStream(out, fingerprint, 0, resume) if shard.is_main else None
        shard.barrier()  # rank 0 checked the folder and wrote its header; the others join what is there
        stream = stream or EvalStream(out, fingerprint, shard.rank, resume=True)
        result = evaluate(vlm, records, steering, toxicity, clip, config=config, progress=progress, cancel=cancel,
                          show_bar=show_bar, asr_judge=judge, allow_overlap=spec.allow_overlap, stream=stream,
                          shard=shard, toxicity_judge=toxic_judge, baseline=spec.baseline)
        if not shard.is_main:
            shard.done()
            return EvalOutcome(result, None, {})
        result.settings.update(data=spec.data, data_hash=data_hash, provenance=provenance())
        metrics = result.metrics(config.resamples, config.seed)
        paths = result.save(out, plots=spec.plots, metrics=metrics)
        write_job_info(out, "eval", spec, **(steering.describe() if steering else {}), records=len(records),
                       sampling=composition(records, total),
                       asr_judge=judge.name, data_hash=data_hash, toxicity_scorer=toxicity.name,
                       clip=clip.name if clip else None, processes=shard.world)
        stream.finish()
        shard.done()
    return EvalOutcome(result, metrics, paths)


@dataclass(frozen=True)
class CompareSpec:
    """What a user chose for a defence comparison: one row per vector file (steered as `steering` says, else as
    each file records) and one for a system prompt, on `limit` records of each data set, under one judge."""

    model: str
    data: tuple[str, ...]
    vectors: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    steering: SteeringChoice = SteeringChoice()
    system_prompt: str | None = None
    judge: str = "auto"
    limit: int | None = None
    max_new_tokens: int = EVAL.max_new_tokens
    batch_size: int | str = "auto"
    allow_overlap: bool = False
    plots: bool = True

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("pick at least one data set to compare on")
        if len(self.names) != len(self.vectors):
            raise ValueError(f"{len(self.names)} names for {len(self.vectors)} vector files")
        _check_counts(self.limit, self.max_new_tokens)


def run_compare_job(spec: CompareSpec, folder: str | Path, vlm: VLM, data: Mapping[str, Sequence[Record]],
                    scorers: tuple[ToxicityScorer, ClipScorer | None], progress: ProgressFn | None = None,
                    cancel: threading.Event | None = None, show_bar: bool = True, log: Log | None = None
                    ) -> tuple[dict[str, Any], dict[str, Path]]:
    """Every defence on every data set (`data`: each of `spec.data` loaded) into `folder`: compare.json,
    compare.md, figures and run.json; returns (table, paths)."""
    say = log or (lambda line: None)
    sampled = {label: stratified_sample(records, spec.limit) for label, records in data.items()}
    defences = []
    for name, path in zip(spec.names, spec.vectors):
        vector = SteeringVector.load(path)
        vector.check_compatible(vlm)
        steering, note = spec.steering.apply(vector)
        say(f"{name}: {note}")
        defences.append(Defence(name, steering))
    if spec.system_prompt:
        defences.append(Defence("system prompt", system_prompt=spec.system_prompt))
    toxicity, clip = scorers
    config = EvalConfig(max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size)
    with RunLock(folder):
        table = run_compare(vlm, sampled, defences, toxicity, clip, spec.judge, config, spec.allow_overlap,
                            progress=progress, cancel=cancel, show_bar=show_bar)
        paths = save(table, folder, plots=spec.plots)
        sampling = {label: composition(sampled[label], len(records)) for label, records in data.items()}
        write_job_info(folder, "compare", spec, judges=table["judges"], sampling=sampling,
                       toxicity_scorer=toxicity.name, clip=clip.name if clip else None)
    return table, paths
