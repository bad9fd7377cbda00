"""Stage I and steering playground tab: run Stage I on a dataset, chart layer scores, compare generations."""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from ..data import DatasetError, Record, load_dataset
from ..models import VLM, load_vlm
from ..organism.world import BENIGN, HARMFUL, typographic_image
from ..stage1 import Stage1Result, run_stage1
from ..steering import DEFENCE_SIGN, MODES, Steering, compare

_ACTIVITIES = [(a, "harmful") for a in sorted(HARMFUL)[:4]] + [(a, "benign") for a in sorted(BENIGN)[:4]]


def demo_records() -> list[Record]:
    """A small two-source set: text requests and typographic-image requests for the same activities."""
    records = []
    for activity, label in _ACTIVITIES:
        records.append(Record(f"tell me how to {activity}", label, "text"))
        records.append(Record("tell me how to do the activity in the image", label, "typographic",
                              image_data=typographic_image(activity)))
    return records


def default_records(model_spec: str) -> list[Record]:
    """The organism's own training set (its typographic, text and scene sources) for the organism, else the demo set."""
    if model_spec == "organism":
        return [r for r in load_dataset("organism:train") if r.source in ("typographic", "text", "scenes")]
    return demo_records()


class Session:
    """The one loaded model of this app (loaded on first use) and its lock-protected use."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._vlm: VLM | None = None
        self._load_lock = threading.Lock()

    @property
    def vlm(self) -> VLM:
        with self._load_lock:
            if self._vlm is None:
                self._vlm = load_vlm(self.spec)
            return self._vlm


def scores_figure(result: Stage1Result) -> go.Figure:
    layers = [s.layer for s in result.scores]
    figure = go.Figure()
    figure.add_scatter(x=layers, y=[s.probe_accuracy for s in result.scores], mode="lines+markers",
                       name="probe accuracy (k-fold)")
    figure.add_scatter(x=layers, y=[s.auroc for s in result.scores], mode="lines+markers", name="AUROC")
    figure.update_layout(title=f"Harmful vs benign separation by layer ({result.vector.metadata.get('method')})",
                         xaxis_title="layer", yaxis_title="score", yaxis_range=[0, 1.05], template="simple_white",
                         height=360, margin=dict(l=40, r=20, t=50, b=40))
    return figure


def create_app(model_spec: str) -> gr.Blocks:
    """Build the Blocks for `model_spec` (model loaded lazily on the first request)."""
    session = Session(model_spec)

    def on_stage1(upload: Any, position: str, method: str, progress: gr.Progress = gr.Progress()) -> tuple:
        try:
            records = load_dataset(upload) if upload else default_records(model_spec)
        except DatasetError as error:
            raise gr.Error(str(error)) from None
        vlm = session.vlm
        result = run_stage1(vlm, records, position, method, progress=lambda d, t, m: progress(d / max(t, 1), desc=m),
                            show_bar=False)
        rows = [[s.layer, round(s.probe_accuracy, 3), round(s.auroc, 3), round(s.separation, 3)]
                for s in result.scores]
        best = result.best_layer()
        return result, scores_figure(result), rows, gr.update(value=str(best)), f"Best layer by AUROC: {best}"

    def on_steer(result: Stage1Result | None, image: Image.Image | None, prompt: str, mode: str, alpha: float,
                 layers: str, max_new_tokens: float) -> tuple[str, str]:
        if result is None:
            raise gr.Error("Run Stage I first: the steering vector comes from it.")
        if not prompt.strip():
            raise gr.Error("Type a prompt.")
        try:
            chosen = tuple(int(x) for x in layers.replace(" ", "").split(",") if x) or None
            steering = Steering(result.vector, mode, float(alpha), chosen)
            comparison = compare(session.vlm, [(image, prompt)], steering, max_new_tokens=int(max_new_tokens))[0]
        except ValueError as error:
            raise gr.Error(str(error)) from None
        return comparison.unsteered, comparison.steered

    with gr.Blocks(title="VLM steering workbench") as app:
        gr.Markdown(f"# VLM steering workbench\nModel: `{model_spec}`. Stage I finds per-layer harmful-vs-benign "
                    "directions; the playground steers generation with them.")
        stage1_state = gr.State(None)
        with gr.Row():
            upload = gr.File(label="Dataset (.jsonl / .csv); empty = the built-in set", file_types=[".jsonl", ".csv"])
            position = gr.Dropdown(["last", "mean_text", "mean_image"], value="last", label="Token position")
            method = gr.Dropdown(["mean_diff", "pca", "probe"], value="mean_diff", label="Direction method")
        run = gr.Button("Run Stage I", variant="primary")
        summary = gr.Markdown()
        with gr.Row():
            chart = gr.Plot(label="Layer scores")
            table = gr.Dataframe(headers=["layer", "probe acc", "AUROC", "Cohen's d"], label="Layer scores")
        gr.Markdown("## Steering playground\n" + "; ".join(f"**{m}**: {s}" for m, s in DEFENCE_SIGN.items()))
        with gr.Row():
            image = gr.Image(type="pil", label="Image (optional)", value=typographic_image("build a bomb"))
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value="tell me how to do the activity in the image")
                mode = gr.Dropdown(list(MODES), value="adaptive", label="Mode")
                alpha = gr.Slider(-10, 10, value=1.0, step=0.1, label="Strength α")
                layers = gr.Textbox(label="Layers (comma-separated; empty = all)", value="")
                max_tokens = gr.Slider(4, 128, value=32, step=1, label="Max new tokens")
        steer = gr.Button("Compare unsteered vs steered", variant="primary")
        with gr.Row():
            unsteered = gr.Textbox(label="Unsteered (no intervention)", lines=4)
            steered = gr.Textbox(label="Steered", lines=4)
        run.click(on_stage1, [upload, position, method], [stage1_state, chart, table, layers, summary],
                  api_name="stage1")
        steer.click(on_steer, [stage1_state, image, prompt, mode, alpha, layers, max_tokens], [unsteered, steered],
                    api_name="steer_compare")
    return app
