"""Export tab: vectors (safetensors, GGUF), figures (PNG + SVG) and an analysis notebook for any run."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ...core.runs import run_kind
from ..context import AppContext, deliver, friendly_errors, run_picker
from ..jobs import export_notebook, export_plots, export_vectors


def build(ctx: AppContext) -> None:
    ui = ctx.ui
    with gr.Tab("Export", id="export"):
        gr.Markdown("Files are written inside the run's own folder (`runs/<run>/export/`) and offered for download. "
                    "Figures: 1800×1040 PNG and SVG in one style, each captioned with the run, model, data, steering "
                    "and commit that produced it. Notebooks reproduce the run through library calls.")
        with gr.Row():
            ui["export_run"] = run_picker("Run", scale=3)
            ui["export_layer"] = gr.Textbox("", label="Layer for Stage I figures (empty = best)", max_lines=1)
        with gr.Row():
            ui["export_gguf_mode"] = gr.Radio(["additive", "adaptive"], value="additive", label="GGUF: steering",
                                              info="llama.cpp adds a constant vector: additive is exact; adaptive "
                                              "is exported as a labelled approximation (-α·‖h̄‖·v̂)")
            ui["export_alpha"] = gr.Number(None, label="GGUF: strength α (in the file)",
                                           info="additive: a negative α defends; llama.cpp: --control-vector FILE")
        with gr.Row():
            ui["export_st"] = gr.Button("Vectors (.safetensors)", interactive=False)
            ui["export_gguf"] = gr.Button("Vectors (GGUF control vector)", interactive=False)
            ui["export_png"] = gr.Button("Figures (PNG + SVG, zip)", interactive=False)
            ui["export_nb"] = gr.Button("Notebook (.ipynb)", interactive=False)
        ui["export_note"] = gr.Textbox(label="What was written", interactive=False, max_lines=3)
        ui["export_file"] = gr.File(label="Download", interactive=False)


EXPORTS_BY_KIND = {"stage1": ("vectors", "gguf", "figures", "notebook"), "stage2": ("vectors", "gguf", "figures"),
                   "eval": ("figures", "notebook")}
BUTTONS = (("vectors", "export_st"), ("gguf", "export_gguf"), ("figures", "export_png"), ("notebook", "export_nb"))


def buttons_for(run_id: str | None) -> list[Any]:
    """Only the exports the picked run has are clickable (an evaluation has no vectors; Stage II no notebook)."""
    try:
        kind = run_kind(run_id) if run_id else None
    except ValueError:
        kind = None
    offered = EXPORTS_BY_KIND.get(kind or "", ())
    note = (f"A {kind} run: " + ", ".join(offered) + " can be exported." if kind else "Pick a run to export from.")
    return [gr.update(interactive=name in offered) for name, _ in BUTTONS] + [note]


def wire(ctx: AppContext) -> None:
    ui = ctx.ui
    ui["export_run"].change(buttons_for, ui["export_run"], [ui[button] for _, button in BUTTONS] +
                            [ui["export_note"]], api_visibility="private")

    def need(run_id: str | None) -> str:
        if not run_id:
            raise ValueError("pick a run to export from")
        return run_id

    @friendly_errors
    def vectors(run_id: str | None, request: gr.Request) -> tuple[str, str]:
        path, note = export_vectors(ctx.visitor(request), need(run_id), "safetensors")
        return deliver(path), note

    @friendly_errors
    def gguf(run_id: str | None, mode: str, alpha: float | None, request: gr.Request) -> tuple[str, str]:
        path, note = export_vectors(ctx.visitor(request), need(run_id), "gguf", alpha, mode)
        return deliver(path), note

    @friendly_errors
    def figures(run_id: str | None, layer: str | None, request: gr.Request) -> str:
        text = (layer or "").strip()
        if text and not text.lstrip("-").isdigit():
            raise ValueError(f"the layer must be a whole number (or empty for the best layer), got {text!r}")
        return deliver(export_plots(ctx.visitor(request), need(run_id), int(text) if text else None))

    @friendly_errors
    def notebook(run_id: str | None, request: gr.Request) -> str:
        return deliver(export_notebook(ctx.visitor(request), need(run_id)))

    ui["export_st"].click(vectors, ui["export_run"], [ui["export_file"], ui["export_note"]], api_name="export_vectors")
    ui["export_gguf"].click(gguf, [ui["export_run"], ui["export_gguf_mode"], ui["export_alpha"]],
                            [ui["export_file"], ui["export_note"]], api_name="export_gguf")
    ui["export_png"].click(figures, [ui["export_run"], ui["export_layer"]], ui["export_file"], api_name="export_plots")
    ui["export_nb"].click(notebook, ui["export_run"], ui["export_file"], api_name="export_notebook")
