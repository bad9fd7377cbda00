"""Attacks tab: a visual adversarial image (PGD, Qi et al. 2023) made on the loaded model, with its live loss curve,
the clean start, the attacked image and the perturbation; used as a dataset or sent to the playground. (FigStep-style
typographic images are made in the Model & data tab.)"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from PIL import Image

from ...attacks.job import blank_image
from ...attacks.pgd import prepare_image
from ...export.plots import style
from ..backend import user_message
from ..context import AppContext, friendly_errors, gpu_task, md_text
from ..jobs import MAX_PGD_PROMPTS, MAX_PGD_STEPS, run_attack

EPSILONS = ("16/255", "32/255", "64/255", "unconstrained")
LOSS = re.compile(r"step (\d+)/\d+ · loss ([0-9.]+)")  # the PGD job's progress line


def build(ctx: AppContext) -> None:
    ui = ctx.ui
    organism = ctx.shared.spec == "organism"
    with gr.Tab("Attacks", id="attacks"):
        gr.Markdown("**Visual adversarial image (PGD).** One universal image, optimised from a blank start so that "
                    "the model continues the chosen prompts with the target strings (PGD-toxic: insults; PGD-JB: an "
                    "affirmative opener), the model frozen, inside an L∞ budget ε, saved as a PNG inside it. Same as "
                    "`python -m workbench attack pgd`. The prompts come from the dataset picked in Model & data. "
                    "FigStep-style typographic images are made in the Model & data tab.")
        with gr.Row():
            ui["atk_targets"] = gr.Radio(["affirmative", "toxic"], value="affirmative", label="Targets",
                                         info="affirmative = PGD-JB; toxic = PGD-toxic (built in for the organism)")
            ui["atk_eps"] = gr.Dropdown(list(EPSILONS), value="32/255", label="Budget ε (L∞)")
            ui["atk_steps"] = gr.Number(100, precision=0, label="Steps", minimum=1, maximum=MAX_PGD_STEPS)
        with gr.Row():
            ui["atk_label"] = gr.Radio(["harmful", "benign"], value="harmful", label="Prompts: records labelled")
            ui["atk_source"] = gr.Textbox("text" if organism else "", label="…of source (empty: any)")
            ui["atk_limit"] = gr.Number(16, precision=0, label="Prompts", minimum=1, maximum=MAX_PGD_PROMPTS)
        with gr.Row():
            ui["atk_go"] = gr.Button("Attack", variant="primary")
            ui["atk_cancel"] = gr.Button("Cancel")
        ui["atk_status"] = gr.Markdown()
        ui["atk_curve"] = gr.Plot(label="Target loss per step")
        with gr.Row():
            ui["atk_clean"] = gr.Image(type="pil", label="Clean start", height=260, interactive=False,
                                       elem_classes="attack-image")
            ui["atk_image"] = gr.Image(type="pil", label="Attacked image (the saved PNG)", height=260,
                                       interactive=False, elem_classes="attack-image")
            ui["atk_delta"] = gr.Image(type="pil", label="Perturbation (scaled to full range)", height=260,
                                       interactive=False, elem_classes="attack-image")
        with gr.Row():
            ui["atk_use"] = gr.Button("Use as dataset")
            ui["atk_send"] = gr.Button("Send to the steering playground")
        ui["atk_last"] = gr.State(None)  # (run id, first prompt) of this visitor's latest attack


def loss_figure(points: list[tuple[int, float]]) -> go.Figure:
    figure = go.Figure()
    figure.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines", name="target loss",
                       line=dict(color="#c0392b", width=2))
    return style(figure, "PGD: mean negative log-likelihood per target token", "step", "loss", height=320)


def perturbation(clean: Image.Image, attacked: Image.Image) -> Image.Image:
    """attacked − clean, grey at zero, stretched so the largest change reaches black or white."""
    delta = np.asarray(attacked, dtype=float) - np.asarray(clean.resize(attacked.size), dtype=float)
    scale = max(float(np.abs(delta).max()), 1.0)
    return Image.fromarray(np.clip(127.5 + 127.5 * delta / scale, 0, 255).astype(np.uint8))


def wire(ctx: AppContext) -> None:
    ui = ctx.ui

    @gpu_task
    @ctx.one_job("PGD attack")
    def attack(dataset: str, targets: str, epsilon: str, steps: float, label: str, source: str, limit: float,
               request: gr.Request, progress: gr.Progress = gr.Progress()) -> Iterator[list[Any]]:
        wb = ctx.visitor(request)
        try:
            records = wb.records(dataset)
        except (ValueError, OSError) as error:
            raise gr.Error(md_text(user_message(error))) from None
        cancel = ctx.cancel_flag(request, "attack")
        lines: queue.Queue = queue.Queue()
        outcome: list[Any] = []

        def work() -> None:
            try:
                outcome.append(run_attack(wb, dataset, records, targets, epsilon, int(steps or 0), label,
                                          (source or "").strip(), int(limit or 0), lambda *a: lines.put(a), cancel))
            except BaseException as error:  # noqa: BLE001 - reported to the visitor below
                outcome.append(error)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        points: list[tuple[int, float]] = []
        keep = [gr.update()] * 4
        try:
            while worker.is_alive() or not lines.empty():
                try:
                    done, total, text = lines.get(timeout=0.5)
                except queue.Empty:
                    continue
                match = LOSS.search(text)
                if match:
                    points.append((int(match.group(1)), float(match.group(2))))
                progress(done / max(total, 1), desc=text)
                if done % 5 == 0 or done == total:
                    yield [loss_figure(points), md_text(text), *keep]
        finally:
            if worker.is_alive():  # cancelled, or the visitor left
                cancel.set()
        worker.join()
        if isinstance(outcome[0], BaseException):
            raise gr.Error(md_text(user_message(outcome[0])))
        run_id, result = outcome[0]
        clean = prepare_image(wb.vlm, blank_image())
        first = next(r.prompt for r in wb.records(f"{run_id}/dataset.jsonl"))
        yield [loss_figure(points), f"Run `{run_id}`: target loss per token {result.clean_loss:.3f} on the clean "
               f"start → {result.final_loss:.3f} on the saved PNG ({md_text(result.settings.get('prompts'))} prompts, "
               f"ε {md_text(epsilon)}). Evaluate it: Use as dataset, then the Evaluate tab.", clean,
               result.images[0], perturbation(clean, result.images[0]), (run_id, first)]

    ui["atk_go"].click(attack, [ui["dataset"], ui["atk_targets"], ui["atk_eps"], ui["atk_steps"], ui["atk_label"],
                                ui["atk_source"], ui["atk_limit"]],
                       [ui["atk_curve"], ui["atk_status"], ui["atk_clean"], ui["atk_image"], ui["atk_delta"],
                        ui["atk_last"]], api_name="attack", show_progress_on=[ui["atk_curve"]])
    ui["atk_cancel"].click(ctx.canceller("attack"), None, ui["atk_status"], queue=False, api_visibility="private")

    @friendly_errors
    def use(last: tuple[str, str] | None, request: gr.Request) -> list[Any]:
        if not last:
            raise ValueError("make an attack first")
        label = f"{last[0]}/dataset.jsonl"
        records = ctx.visitor(request).records(label)
        return [label, label, f"Dataset: the {len(records)} attacked records of run `{last[0]}` (Stage I, Stage II "
                f"and the Evaluate tab now use them)."]

    ui["atk_use"].click(use, ui["atk_last"], [ui["dataset"], ui["eval_data"], ui["atk_status"]],
                        api_visibility="private")

    def send(image: Any, last: tuple[str, str] | None) -> tuple[Any, str, Any]:
        if image is None or not last:
            raise gr.Error("make an attack first")
        return image, last[1], gr.Tabs(selected="playground")

    ui["atk_send"].click(send, [ui["atk_image"], ui["atk_last"]], [ui["play_image"], ui["play_prompt"], ui["tabs"]],
                         api_visibility="private")
