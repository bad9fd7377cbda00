"""The app's side of the long jobs (widgets' values -> the job specs the CLI also builds) and its exports.

Each job writes into its own run folder (created before the work starts, so a cancelled or failed job leaves a
folder that says so) and never touches another run's files. The work itself is the shared job pipeline
(`stage1/job.py`, `stage2/job.py`, `evaluate/job.py`).
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.io import atomic_write
from ..core.runs import caption, run_kind
from ..evaluate.evaluation import Evaluation
from ..evaluate.job import CompareSpec, EvalSpec, SteeringChoice, run_compare_job, run_eval_job
from ..export.plots import (
    curves_figure,
    export,
    layer_scores_figure,
    metrics_figure,
    project_2d,
    separation_figure,
    similarity_figure,
)
from ..stage2.job import Stage2Spec, run_stage2_job
from ..stage2.loop import Stage2Config, StepMetrics
from ..stage2.store import Stage2Store
from ..steer.steering import Steering, steering_for
from .backend import Workbench, using_model
from .hosting import MAX_PROMPT_CHARS


def create_stage2(wb: Workbench, source_run: str, data_label: str, config: Stage2Config) -> str:
    """A new Stage II run folder refining the vectors of `source_run`; returns its id."""
    # training steers too: the hosted policy applies before any work (fails early when the source has no vectors)
    wb.check_dual_use(config.mode, config.alpha, wb.vector(source_run), config.layers)
    run_id, _ = wb.runs.create("stage2", {"model": wb.spec, "data": data_label, "source_run": source_run,
                                          "status": "created", "steps": config.steps})
    return run_id


@using_model
def run_stage2(wb: Workbench, run_id: str, config: Stage2Config | None, resume: bool, cancel: threading.Event,
               on_step: Callable[[StepMetrics], None]) -> None:
    """Train (or resume) run `run_id` through the Stage II job; the run folder keeps config, metrics, checkpoints
    and final vectors."""
    info = wb.runs.info(run_id)
    folder = wb.runs.path(run_id)
    if resume:
        if not (folder / "config.json").is_file():
            raise ValueError(f"run {run_id} never started training (no config saved); start a new run instead")
        config = Stage2Config(**json.loads((folder / "config.json").read_text(encoding="utf-8")))
    assert config is not None
    source = info["source_run"]  # a resumed run is checked again (the host's policy may be newer)
    wb.check_dual_use(config.mode, config.alpha, wb.vector(source), config.layers)
    spec = Stage2Spec(wb.spec, info["data"], str(wb.runs.path(source) / "vectors.safetensors"), config, source)
    run_stage2_job(spec, folder, wb.vlm, wb.records(info["data"]), wb.scorers(), resume, cancel=cancel,
                   on_step=on_step, show_bar=False)


def stage2_metrics(wb: Workbench, run_id: str) -> list[dict]:
    """The run's metrics.jsonl rows (empty before the first step)."""
    return Stage2Store(wb.runs.path(run_id)).metrics()


# The judges a visitor may pick (classifier judges load models: the CLI, run by the host, offers those).
APP_JUDGES = ("auto", "organism", "keyword")


def _check_judge(judge: str) -> None:
    if judge not in APP_JUDGES:
        raise ValueError(f"unknown ASR judge {judge!r}; pick one of {', '.join(APP_JUDGES)}")


def _choice(steering: Steering) -> SteeringChoice:
    """The settings of a `Steering` the visitor set (and the policy checked), for a job spec."""
    return SteeringChoice(steering.mode, steering.alpha, steering.layers, steering.steer_at)


@using_model
def run_evaluation(wb: Workbench, vectors_run: str | None, data_label: str, records: list,
                   steering: Steering | SteeringChoice | None, limit: int, max_new_tokens: int, progress: Any = None,
                   cancel: threading.Event | None = None, judge: str = "auto") -> tuple[str, dict, Evaluation]:
    """The eval job on `limit` of `records` (loaded from `data_label`) in a new eval run, listed once it is whole;
    returns (id, metrics, evaluation)."""
    _check_judge(judge)
    spec = EvalSpec(wb.spec, data_label, judge=judge, limit=int(limit), max_new_tokens=int(max_new_tokens))
    if steering is not None:
        if not vectors_run:
            raise ValueError("a steered evaluation needs the run its vectors come from")
        spec = replace(spec, vectors=str(wb.runs.path(vectors_run) / "vectors.safetensors"),
                       vectors_run=vectors_run,
                       steering=steering if isinstance(steering, SteeringChoice) else _choice(steering))
    run_id, folder = wb.runs.create("eval", {"model": wb.spec, "data": data_label}, staged=True)
    try:
        done = run_eval_job(spec, folder, wb.vlm, records, wb.scorers(), progress=progress, cancel=cancel,
                            show_bar=False)
    except BaseException:
        wb.runs.discard(run_id)
        raise
    wb.runs.publish(run_id)
    assert done.metrics is not None
    return run_id, done.metrics, done.evaluation


MAX_COMPARED = 6  # runs and data sets in one app comparison (each pair is a full evaluation)


@using_model
def run_comparison(wb: Workbench, run_ids: list[str], datasets: list[str], limit: int, judge: str,
                   system_prompt: str | None, progress: Any = None, cancel: threading.Event | None = None) -> dict:
    """The compare job on `limit` records of each data set, one row per run's vectors (recorded settings), in a
    new compare run."""
    if not datasets:
        raise ValueError("pick at least one data set to compare on")
    if len(run_ids) > MAX_COMPARED or len(datasets) > MAX_COMPARED:
        raise ValueError(f"compare at most {MAX_COMPARED} runs and {MAX_COMPARED} data sets at once")
    if limit < 1:
        raise ValueError(f"compare on at least 1 record per set (got {limit})")
    _check_judge(judge)
    for run_id in run_ids:
        steering, _ = steering_for(wb.vector(run_id), None, None, None, None)
        wb.check_dual_use(steering.mode, steering.alpha, steering.vector, steering.active_layers)
    if system_prompt and len(system_prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the system prompt is {len(system_prompt):,} characters; keep it under "
                         f"{MAX_PROMPT_CHARS:,}")
    data = {}
    for choice in datasets:
        records, label = wb.dataset(choice)
        data[label] = records
    spec = CompareSpec(wb.spec, tuple(data), tuple(str(wb.runs.path(r) / "vectors.safetensors") for r in run_ids),
                       tuple(run_ids), system_prompt=(system_prompt or "").strip() or None, judge=judge,
                       limit=int(limit))
    run_id, folder = wb.runs.create("compare", {"model": wb.spec, "data": list(data)}, staged=True)
    try:
        table, _ = run_compare_job(spec, folder, wb.vlm, data, wb.scorers(), progress=progress, cancel=cancel,
                                   show_bar=False)
    except BaseException:
        wb.runs.discard(run_id)
        raise
    wb.runs.publish(run_id)
    return table


MAX_PGD_STEPS = 1000  # one attack holds the shared model: 1000 steps take about 20 min on the organism (2 cores)
MAX_PGD_PROMPTS = 64


@using_model
def run_attack(wb: Workbench, data_label: str, records: list, targets: str, epsilon: str, steps: int, label: str,
               source: str, limit: int, progress: Any = None, cancel: threading.Event | None = None
               ) -> tuple[str, Any]:
    """The PGD job (as `attack pgd` runs it: one universal image from a blank start) on `limit` of the set's `label`
    records (of `source`, if given) in a new attack run; returns (run id, PGDResult). Jailbreak images for real
    models are refused in hosting mode (the dual-use policy)."""
    from ..attacks.job import PGDSpec, blank_image, pick_prompts, run_pgd_job
    from ..attacks.pgd import PGDSettings, parse_epsilon
    from ..attacks.targets import target_strings

    wb.check_dual_use()
    if not 1 <= steps <= MAX_PGD_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_PGD_STEPS} here (the model is shared); got {steps}")
    if not 1 <= limit <= MAX_PGD_PROMPTS:
        raise ValueError(f"use between 1 and {MAX_PGD_PROMPTS} prompts; got {limit}")
    chosen = pick_prompts(records, label, source, limit, data_label)
    settings = PGDSettings(parse_epsilon(epsilon), 1 / 255, steps)
    spec = PGDSpec(wb.spec, data_label, targets, settings)
    strings = target_strings(targets, wb.spec)
    run_id, folder = wb.runs.create("attack", {"model": wb.spec, "data": data_label}, staged=True)
    try:
        result = run_pgd_job(spec, folder, wb.vlm, blank_image(), chosen, strings,
                             progress=progress, cancel=cancel)
    except BaseException:
        wb.runs.discard(run_id)
        raise
    wb.runs.publish(run_id)
    return run_id, result


ORGANISM_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "organism.toml"


@using_model
def run_reproduction(wb: Workbench, progress: Any = None, cancel: threading.Event | None = None) -> str:
    """The organism recipe (`reproduce`, as the CLI runs it) in a new run; returns its id. Each step line moves the
    bar; a cancelled run stays listed (its finished steps are kept) and says it has no table yet."""
    from ..reproduce.job import run_reproduce_job
    from ..reproduce.recipe import load_recipe

    if wb.spec != "organism":
        raise ValueError("the app runs the organism's recipe only; run other recipes with `python -m workbench "
                         "reproduce RECIPE --out DIR` (recipes/llava-1.5-7b.toml says what it needs)")
    if wb.policy.hosted:
        raise ValueError("this hosted app does not run the 40-minute recipe for visitors (the model is shared); run "
                         "it on your machine: python -m workbench reproduce recipes/organism.toml --out runs/table")
    if not ORGANISM_RECIPE.is_file():
        raise ValueError("recipes/organism.toml is not beside this installation; run the app from a checkout")
    recipe = load_recipe(ORGANISM_RECIPE)
    run_id, folder = wb.runs.create("reproduce", {"model": wb.spec, "data": f"recipe {recipe.name}",
                                                  "status": "not finished (no table yet)"})
    run_reproduce_job(recipe, folder, wb.vlm, wb.scorers(), f"the app (run {run_id}) = python -m workbench "
                      "reproduce recipes/organism.toml", log=lambda line: None, cancel=cancel, show_bar=False,
                      progress=progress)
    return run_id


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
    from ..export.notebook import build_notebook, write_notebook

    folder = wb.runs.path(run_id)
    if run_kind(run_id) == "stage2":
        raise ValueError("notebooks are made from a Stage I or evaluation run; pick one of those")
    path = folder / "export" / f"{run_id}.ipynb"
    write_notebook(build_notebook(folder, path.parent), path)
    return path
