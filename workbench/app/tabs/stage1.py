"""Stage I tab: capture activations, per-layer scores, per-source similarity and the separation scatter."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ...data.sources import default_dataset
from ...stage1.activations import POSITIONS
from ...stage1.directions import METHODS
from ...stage1.presets import PRESETS
from ..backend import Workbench
from ..context import AppContext, friendly_errors, gpu_task, md_text, progress_callback, run_picker
from ..jobs import stage1_figures

SCORE_HEADERS = ["layer", "probe accuracy", "majority baseline", "AUROC (held out)",
                 "Cohen's d (held out)", "AUROC in sample"]


def build(ctx: AppContext) -> None:
    ui = ctx.ui
    with gr.Tab("Stage I: directions", id="stage1"):
        with gr.Row():
            ui["dataset"] = gr.Textbox(default_dataset(ctx.shared.spec), label="Dataset (choose it in Model & data)",
                                       interactive=False)
            ui["s1_position"] = gr.Dropdown(list(POSITIONS), value="last", label="Token position")
            ui["s1_method"] = gr.Dropdown(list(METHODS), value="mean_diff", label="Direction method")
            ui["s1_preset"] = gr.Dropdown(list(PRESETS), value="workbench", label="Preset",
                                          info="astra: ASTRA's protocol (attribution, one layer, last position, α "
                                          "swept); workbench: the project's own")
            with gr.Column():
                ui["s1_run"] = gr.Button("Run Stage I", variant="primary")
                ui["s1_cancel"] = gr.Button("Cancel", size="sm")
        with gr.Row():
            ui["stage1_reopen"] = run_picker("…or reopen a saved Stage I run", scale=4)
            ui["s1_open"] = gr.Button("Open", scale=1)
        ui["s1_summary"] = gr.Markdown()
        ui["s1_run_id"] = gr.Textbox(label="Current Stage I run", interactive=False, max_lines=1)
        # min widths: side by side where both fit whole (1920 px), one above the other where they would not (1280 px)
        with gr.Row(elem_id="s1-scores-row"):
            ui["s1_chart"] = gr.Plot(label="Separation by layer", min_width=600, elem_id="s1-chart")
            ui["s1_table"] = gr.Dataframe(headers=SCORE_HEADERS, label="Layer scores", interactive=False,
                                          wrap=True, min_width=640, elem_id="s1-table")
        gr.Markdown("### Separation at one layer\nHover a point to see its prompt.")
        with gr.Row():
            ui["s1_layer"] = gr.Slider(0, 1, value=0, step=1, label="Layer")
            ui["s1_projection"] = gr.Radio(["pca", "umap"], value="pca", label="Projection",
                                           info="UMAP's first fit in a process compiles (up to a minute on a CPU)")
        with gr.Row():
            ui["s1_scatter"] = gr.Plot(label="Harmful vs benign", min_width=520, elem_id="s1-scatter")
            ui["s1_heatmap"] = gr.Plot(label="Per-source direction similarity", min_width=520, elem_id="s1-heatmap")


def _views(wb: Workbench, run_id: str, layer: int | None, projection: str) -> tuple[Any, Any, Any]:
    """(layer scores chart, separation scatter, source-similarity heatmap or None) at `layer`."""
    figures = stage1_figures(wb, run_id, layer, projection)
    scatter = next(f for name, f in figures.items() if name.startswith("separation"))
    heatmap = next((f for name, f in figures.items() if name.startswith("source_similarity")), None)
    return figures["layer_scores"], scatter, heatmap


def _show(ctx: AppContext, request: gr.Request | None, run_id: str, projection: str) -> list[Any]:
    wb = ctx.visitor(request)
    result = wb.stage1(run_id)
    best = result.best_layer()
    rows = [[s.layer, round(s.probe_accuracy, 3), round(s.probe_baseline, 3), round(s.auroc, 3), round(s.separation, 2),
             round(s.auroc_in_sample, 3)] for s in result.scores]
    info = wb.runs.info(run_id)
    recorded = result.vector.metadata.get("steering") or {}
    layers = list(recorded.get("layers") or result.suggested_layers())
    suggested = ",".join(map(str, layers))
    preset = result.vector.metadata.get("preset", "workbench")
    where = md_text(recorded.get("steer_at"))
    made = (f" Preset {md_text(preset)}: steers layer {suggested} at position(s) {where}, α "
            f"{md_text(recorded.get('alpha'))} (chosen by a sweep on the training data; alpha_sweep.csv)."
            if recorded else "")
    summary = (f"Run `{run_id}` · data {md_text(info.get('data'))} · {md_text(info.get('records'))} records · "
               f"{result.verdict()}"
               + (" (set in the playground, Stage II and Evaluate)." if layers else
                  ". The layer boxes are left as they were: steering along these directions is not supported "
                  "by the data.") + made + " Directions point from benign to harmful; AUROC and d are held out.")
    chart, scatter, heatmap = _views(wb, run_id, best, projection)
    slider = gr.update(minimum=0, maximum=result.activations.num_layers - 1, value=best)
    boxes = [suggested] * 3 if layers else [gr.update()] * 3
    return [run_id, summary, chart, rows, slider, scatter, heatmap, *boxes, *ctx.refresh_pickers(request, run_id)]


def wire(ctx: AppContext) -> None:
    ui = ctx.ui
    outputs = [ui["s1_run_id"], ui["s1_summary"], ui["s1_chart"], ui["s1_table"], ui["s1_layer"], ui["s1_scatter"],
               ui["s1_heatmap"], ui["play_layers"], ui["s2_layers"], ui["eval_layers"], *ctx.pickers()]

    @gpu_task
    @ctx.one_job("Stage I")
    @friendly_errors
    def run(dataset: str, position: str, method: str, projection: str, preset: str, request: gr.Request,
            progress: gr.Progress = gr.Progress()) -> list[Any]:
        cancel = ctx.cancel_flag(request, "stage1")
        wb = ctx.visitor(request)
        records = wb.records(dataset)
        run_id = wb.run_stage1(records, dataset, position, method, progress_callback(progress), cancel, preset)
        return _show(ctx, request, run_id, projection)

    @friendly_errors
    def reopen(run_id: str | None, projection: str, request: gr.Request) -> list[Any]:
        if not run_id:
            raise ValueError("pick a saved run to open")
        return _show(ctx, request, run_id, projection)

    @friendly_errors
    def relayer(run_id: str | None, layer: float, projection: str, request: gr.Request,
                progress: gr.Progress = gr.Progress()) -> tuple[Any, Any]:
        if not run_id:
            return gr.update(), gr.update()
        if projection == "umap":  # no steps to count: say what is happening and why the first fit is slow
            progress(0, desc=f"fitting UMAP at layer {int(layer)} (the first fit in a process compiles: up to a "
                     "minute on a CPU)")
        return _views(ctx.visitor(request), run_id, int(layer), projection)[1:]

    ui["s1_run"].click(run, [ui["dataset"], ui["s1_position"], ui["s1_method"], ui["s1_projection"], ui["s1_preset"]],
                       outputs,
                       api_name="stage1", show_progress_on=[ui["s1_summary"], ui["s1_chart"]])
    ui["s1_cancel"].click(ctx.canceller("stage1"), None, ui["s1_summary"], queue=False, api_visibility="private")
    ui["s1_open"].click(reopen, [ui["stage1_reopen"], ui["s1_projection"]], outputs, api_name="open_stage1")
    for trigger in (ui["s1_layer"].release, ui["s1_projection"].change):
        trigger(relayer, [ui["s1_run_id"], ui["s1_layer"], ui["s1_projection"]], [ui["s1_scatter"], ui["s1_heatmap"]],
                api_visibility="private")
