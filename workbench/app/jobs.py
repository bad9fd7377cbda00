"""The app's long jobs and exports: Stage II runs, evaluations, and files to download.

Each job writes into its own run folder (created before the work starts, so a cancelled or failed
job leaves a folder that says so) and never touches another run's files.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data import dataset_hash
from ..evaluation import EvalConfig, Evaluation, evaluate
from ..io import atomic_write
from ..judges import choose_judge
from ..plots import (
    curves_figure,
    export,
    layer_scores_figure,
    metrics_figure,
    project_2d,
    separation_figure,
    similarity_figure,
)
from ..rewards.combined import RewardModel, RewardWeights
from ..runs import caption, provenance, run_kind
from ..stage2 import Stage2Config, Stage2Run, StepMetrics
from ..stage2_store import Stage2Store
from ..steering import Steering
from .backend import Workbench, using_model
from .hosting import MAX_PROMPT_CHARS


def create_stage2(wb: Workbench, source_run: str, data_label: str, config: Stage2Config) -> str:
    """A new Stage II run folder refining the vectors of `source_run`; returns its id."""
    wb.vector(source_run)  # fails early, with a message, when the source has no usable vectors
    run_id, _ = wb.runs.create("stage2", {"model": wb.spec, "data": data_label, "source_run": source_run,
                                          "status": "created", "steps": config.steps})
    return run_id


@using_model
def run_stage2(wb: Workbench, run_id: str, config: Stage2Config | None, resume: bool, cancel: threading.Event,
               on_step: Callable[[StepMetrics], None]) -> None:
    """Train (or resume) run `run_id`; the run folder keeps config, metrics, checkpoints and final vectors."""
    info = wb.runs.info(run_id)
    folder = wb.runs.path(run_id)
    if resume:
        if not (folder / "config.json").is_file():
            raise ValueError(f"run {run_id} never started training (no config saved); start a new run instead")
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config = Stage2Config(**saved)
    assert config is not None
    toxicity, clip = wb.scorers()
    records = wb.records(info["data"])
    vector = wb.vector(info["source_run"])
    trainer = Stage2Run(wb.vlm, vector, records, RewardModel(toxicity, clip, RewardWeights(**config.weights)),
                        config, folder, resume=resume)
    wb.runs.update(run_id, status="running")
    try:
        trainer.run(cancel=cancel, on_step=on_step, show_bar=False)
    except BaseException as error:
        wb.runs.update(run_id, status=f"stopped at step {trainer.step} ({type(error).__name__})")
        raise
    wb.runs.update(run_id, status="finished")


def stage2_metrics(wb: Workbench, run_id: str) -> list[dict]:
    """The run's metrics.jsonl rows (empty before the first step)."""
    return Stage2Store(wb.runs.path(run_id)).metrics()


# The judges a visitor may pick (classifier judges load models: the CLI, run by the host, offers those).
APP_JUDGES = ("auto", "organism", "keyword")


@using_model
def run_evaluation(wb: Workbench, vectors_run: str | None, data_label: str, records: list,
                   steering: Steering | None, limit: int, max_new_tokens: int, progress: Any = None,
                   cancel: threading.Event | None = None, judge: str = "auto") -> tuple[str, dict, Evaluation]:
    """Evaluate unsteered vs steered on `limit` of `records` (loaded from `data_label`); saves an eval run;
    returns (id, metrics, evaluation)."""
    if limit < 1:
        raise ValueError(f"evaluate at least 1 record (got {limit})")
    if judge not in APP_JUDGES:
        raise ValueError(f"unknown ASR judge {judge!r}; pick one of {', '.join(APP_JUDGES)}")
    records = _spread(records, limit)
    asr_judge = choose_judge(judge, data_label, steering.vector.metadata if steering else None)
    toxicity, clip = wb.scorers()
    config = EvalConfig(max_new_tokens=int(max_new_tokens))
    result = evaluate(wb.vlm, records, steering, toxicity, clip, config=config, progress=progress, cancel=cancel,
                      show_bar=False, asr_judge=asr_judge)
    result.settings.update(data=data_label, data_hash=dataset_hash(records), provenance=provenance())
    info = {"model": wb.spec, "data": data_label, "vectors_run": vectors_run, "limit": limit,
            "asr_judge": asr_judge.name, "data_hash": result.settings["data_hash"]}
    if steering is not None:
        info.update(steering.describe())
    run_id, folder = wb.runs.create("eval", info)
    metrics = result.metrics(config.resamples, config.seed)
    result.save(folder, metrics=metrics)
    return run_id, metrics, result


MAX_COMPARED = 6  # runs and data sets in one app comparison (each pair is a full evaluation)


@using_model
def run_comparison(wb: Workbench, run_ids: list[str], datasets: list[str], limit: int, judge: str,
                   system_prompt: str | None, progress: Any = None, cancel: threading.Event | None = None) -> dict:
    """`compare.run_compare` on `limit` records of each data set, one row per run's vectors (recorded settings)."""
    from ..compare import Defence, run_compare
    from ..steering import steering_for

    if not datasets:
        raise ValueError("pick at least one data set to compare on")
    if len(run_ids) > MAX_COMPARED or len(datasets) > MAX_COMPARED:
        raise ValueError(f"compare at most {MAX_COMPARED} runs and {MAX_COMPARED} data sets at once")
    if limit < 1:
        raise ValueError(f"compare on at least 1 record per set (got {limit})")
    if judge not in APP_JUDGES:
        raise ValueError(f"unknown ASR judge {judge!r}; pick one of {', '.join(APP_JUDGES)}")
    defences = []
    for run_id in run_ids:
        steering, _ = steering_for(wb.vector(run_id), None, None, None, None)
        wb.check_dual_use(steering.mode, steering.alpha)
        defences.append(Defence(run_id, steering))
    if system_prompt and len(system_prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the system prompt is {len(system_prompt):,} characters; keep it under "
                         f"{MAX_PROMPT_CHARS:,}")
    if system_prompt and system_prompt.strip():
        defences.append(Defence("system prompt", system_prompt=system_prompt.strip()))
    data = {}
    for choice in datasets:
        records, label = wb.dataset(choice)
        data[label] = _spread(records, limit)
    toxicity, clip = wb.scorers()
    return run_compare(wb.vlm, data, defences, toxicity, clip, judge, EvalConfig(),
                       progress=progress, cancel=cancel, show_bar=False)


def _spread(records: list, limit: int) -> list:
    """`limit` records spread evenly over the set, so every source is represented."""
    if len(records) <= limit:
        return records
    step = len(records) / limit
    return [records[int(i * step)] for i in range(limit)]


# --- exports ---------------------------------------------------------------------------------------
def export_vectors(wb: Workbench, run_id: str, fmt: str, alpha: float | None = None,
                   mode: str = "additive") -> tuple[Path, str]:
    """The run's vectors as safetensors (with the .json sidecar), or as a llama.cpp GGUF control vector holding
    the vector steering adds at strength `alpha` (adaptive only as a labelled approximation); (path, note)."""
    vector = wb.vector(run_id)
    out = wb.runs.path(run_id) / "export"
    if fmt == "safetensors":
        path = out / f"{run_id}-vectors.safetensors"
        vector.save(path)
        return path, "safetensors with the vector's metadata (.json beside it)"
    if fmt != "gguf":
        raise ValueError(f"unknown vector format {fmt!r}; use safetensors or gguf")
    if alpha is None:
        raise ValueError("GGUF holds the vector llama.cpp adds as is: give the strength α (for additive steering "
                         "a negative α defends)")
    path = out / f"{run_id}-{mode}-alpha{alpha:g}.gguf"
    out.mkdir(parents=True, exist_ok=True)
    return path, vector.to_gguf(path, float(alpha), mode, approximate=mode == "adaptive")


def stage1_figures(wb: Workbench, run_id: str, layer: int | None = None, projection: str = "pca") -> dict:
    """The Stage I figures of a run at `layer` (default: its best layer)."""
    result = wb.stage1(run_id)
    layer = result.best_layer() if layer is None else int(layer)
    if not 0 <= layer < result.activations.num_layers:
        raise ValueError(f"layer {layer} is out of range; this model has layers 0-{result.activations.num_layers - 1}")
    acts = result.activations
    position = acts.metadata.get("position", "last")
    figures = {"layer_scores": layer_scores_figure(result.scores, result.vector.metadata.get("method", "mean_diff")),
               f"separation_{projection}_layer{layer}": separation_figure(
                   project_2d(acts.values[:, layer], projection), acts.labels, acts.sources, acts.prompts, layer,
                   projection, position)}
    if result.source_similarity is not None:
        figures[f"source_similarity_layer{layer}"] = similarity_figure(result.source_similarity,
                                                                       list(result.per_source), layer)
    return figures


def export_plots(wb: Workbench, run_id: str, layer: int | None = None) -> Path:
    """A zip of the run's figures as PNG and SVG at publication size."""
    kind = run_kind(run_id)
    folder = wb.runs.path(run_id)
    if kind == "stage1":
        figures = stage1_figures(wb, run_id, layer)
    elif kind == "stage2":
        figures = {"stage2_curves": curves_figure(stage2_metrics(wb, run_id))}
    else:
        figures = {"metrics_overall": metrics_figure(json.loads((folder / "metrics.json").read_text()))}
    paths = export(figures, folder / "export" / "figures", caption=caption(wb.runs.info(run_id)))
    archive = folder / "export" / f"{run_id}-figures.zip"

    def write(temp: str) -> None:
        with zipfile.ZipFile(temp, "w") as bundle:
            for path in paths:
                bundle.write(path, path.name)
    atomic_write(archive, write)
    return archive


def export_notebook(wb: Workbench, run_id: str) -> Path:
    """A runnable analysis notebook (not executed: the user runs it) for a Stage I or eval run."""
    from ..notebook import build_notebook, write_notebook

    folder = wb.runs.path(run_id)
    if run_kind(run_id) == "stage2":
        raise ValueError("notebooks are made from a Stage I or evaluation run; pick one of those")
    path = folder / "export" / f"{run_id}.ipynb"
    write_notebook(build_notebook(folder, path.parent), path)
    return path
