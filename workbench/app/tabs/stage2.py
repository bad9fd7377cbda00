"""Stage II tab: refine a run's vectors by preference optimisation, with live curves, cancel and resume."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr

from ...core.progress import step_eta
from ...export.plots import curves_figure
from ...stage2.loop import REFERENCES, Stage2Config
from ...stage2.objectives import OBJECTIVES
from ...stage2.presets import PRESETS, parse_reward_weights, stage2_config
from ...steer.rules import modes
from ...steer.steering import parse_layers
from ..backend import Workbench, user_message
from ..context import AppContext, adopt_recorded_steering, friendly_errors, gpu_task, md_text, run_picker
from ..jobs import create_stage2, run_stage2, stage2_metrics

DEFAULTS = Stage2Config()


def build(ctx: AppContext) -> None:
    ui = ctx.ui
    with gr.Tab("Stage II: refine", id="stage2"):
        ui["s2_device"] = gr.Markdown("The VLM stays frozen; only the per-layer steering vectors (and strengths) "
                                      "train. Runs on the model's device (GPU when present).")
        with gr.Row():
            ui["s2_preset"] = gr.Dropdown(list(PRESETS), value="workbench", label="Preset", scale=1,
                                          info="spo-vlm: the paper's Stage II; workbench: the project's own settings; "
                                          "workbench-refusal: the project's refusal variant")
            ui["s2_reward"] = gr.Textbox(_weights_text(DEFAULTS.weights), label="Reward weights", scale=2,
                                         info="term=weight, every term not named at 0 (toxicity, visual, refusal, "
                                         "fluency)")
            ui["s2_preset_note"] = gr.Markdown(PRESETS["workbench"].summary)
        with gr.Row():
            ui["s2_source"] = run_picker("Start from the vectors of run", scale=3)
            ui["s2_steps"] = gr.Number(DEFAULTS.steps, precision=0, label="Steps", minimum=1, maximum=5000)
            ui["s2_k"] = gr.Number(DEFAULTS.samples_per_prompt, precision=0, label="Samples per prompt (K)",
                                   minimum=2, maximum=16)
            ui["s2_prompts"] = gr.Number(DEFAULTS.prompts_per_step, precision=0, label="Prompts per step", minimum=1,
                                         maximum=64)
        with gr.Row():
            ui["s2_objective"] = gr.Radio(list(OBJECTIVES), value=DEFAULTS.objective, label="Objective")
            ui["s2_reference"] = gr.Radio(list(REFERENCES), value=DEFAULTS.reference, label="DPO reference")
            ui["s2_mode"] = gr.Dropdown(list(modes()), value=DEFAULTS.mode, label="Mode")
            ui["s2_alpha"] = gr.Number(DEFAULTS.alpha, label="Strength α")
            ui["s2_layers"] = gr.Textbox("", label="Layers (empty = as the vector recorded or Stage I suggested)")
            ui["s2_lr"] = gr.Number(DEFAULTS.learning_rate, label="Learning rate")
            ui["s2_beta"] = gr.Number(DEFAULTS.beta, label="β")
        ui["s2_safe"] = gr.Textbox("", label="Safe reply for harmful prompts (optional, off-policy)",
                                   placeholder="sorry , i cannot help with that .",
                                   info="Put in place of one of the K samples of every harmful prompt, so a refusal "
                                   "the steered model never samples can still be preferred. On the organism, grpo "
                                   "with its own refusal here reaches clean refusals; empty keeps Stage II on-policy.")
        with gr.Row():
            ui["s2_start"] = gr.Button("Start Stage II", variant="primary")
            ui["s2_cancel"] = gr.Button("Cancel (keeps a checkpoint)")
        with gr.Row():
            ui["s2_resume"] = run_picker("Resume a Stage II run", scale=4)
            ui["s2_resume_go"] = gr.Button("Resume", scale=1)
        ui["s2_status"] = gr.Markdown()
        ui["s2_curves"] = gr.Plot(label="Training curves")


def _weights_text(weights: dict[str, float]) -> str:
    return ",".join(f"{name}={value:g}" for name, value in weights.items() if value)


def preset_widgets(preset: str) -> list[Any]:
    """What a preset sets, shown in its widgets (objective, reference, reward weights, steps, safe reply, note)."""
    chosen = PRESETS[preset]
    settings = {**{"objective": DEFAULTS.objective, "reference": DEFAULTS.reference, "steps": DEFAULTS.steps,
                   "safe_response": None, "weights": dict(DEFAULTS.weights)}, **chosen.settings}
    safe = settings["safe_response"]
    label = "" if chosen.faithful else " (the project's own settings, not a published method)"
    return [settings["objective"], settings["reference"], _weights_text(settings["weights"]), settings["steps"],
            "" if safe in (None, "required") else safe, f"**{chosen.name}**: {md_text(chosen.summary)}{label}"]


def _train(ctx: AppContext, run_id: str, config: Stage2Config | None, resume: bool, request: gr.Request | None,
           progress: gr.Progress) -> Iterator[list[Any]]:
    """Train in a worker thread and stream curves after every step. The job is the visitor's: if the page goes
    away (the event is cancelled, the tab closed), the training stops at its next step and keeps a checkpoint."""
    wb = ctx.visitor(request)
    total = config.steps if config else friendly_errors(lambda: wb.runs.info(run_id).get("steps", 1))()
    cancel = ctx.cancel_flag(request, "stage2")
    steps: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            run_stage2(wb, run_id, config, resume, cancel, steps.put)
        except BaseException as error:  # noqa: BLE001 - reported to the user below
            failure.append(error)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    keep = [gr.update()] * len(ctx.pickers())  # the pickers stay as they are until the run ends
    paces: list[float] = []  # seconds per step this session (a resumed run has no pace before its first step)
    try:
        while worker.is_alive() or not steps.empty():
            try:
                metrics = steps.get(timeout=0.5)
            except queue.Empty:
                continue
            paces.append(metrics.seconds)
            eta = step_eta(paces, total - metrics.step)
            progress(metrics.step / max(total, 1), desc=f"Stage II step {metrics.step}/{total}" + (f" · {eta}" if eta
                                                                                                   else ""))
            status = (f"Run `{run_id}` on {wb.vlm.input_device.type.upper()} · step {metrics.step}/{total} · "
                      f"loss {metrics.loss:.4f} · reward "
                      f"{metrics.reward:.3f} · refusal {metrics.refusal_rate:.2f} · {metrics.seconds:.1f} s/step"
                      + (f" · {eta}" if eta else ""))
            yield [curves_figure(stage2_metrics(wb, run_id)), status, *keep]
    finally:
        if worker.is_alive():  # the event was cancelled or its client left: nobody is watching this training
            cancel.set()
    worker.join()
    rows = stage2_metrics(wb, run_id)
    if failure:
        message = user_message(failure[0])
        yield [curves_figure(rows), f"Run `{run_id}` stopped: {md_text(message)}. Resume it to continue from its last "
               "checkpoint.", *ctx.refresh_pickers(request)]
        return
    yield [curves_figure(rows), f"Run `{run_id}` finished {len(rows)} steps; its vectors are added to the run "
           "pickers (pick it there: mode, α and layers then follow what it was trained with).",
           *ctx.refresh_pickers(request)]


def wire(ctx: AppContext) -> None:
    ui = ctx.ui
    outputs = [ui["s2_curves"], ui["s2_status"], *ctx.pickers()]

    @gpu_task
    @ctx.one_job("Stage II")
    def start(source: str | None, dataset: str, steps: float, k: float, prompts: float, objective: str,
              reference: str, mode: str, alpha: float, layers: str, lr: float, beta: float, safe: str | None,
              preset: str, reward: str, request: gr.Request, progress: gr.Progress = gr.Progress()
              ) -> Iterator[list[Any]]:
        run_id, config = _create(ctx.visitor(request), source, dataset, steps, k, prompts, objective, reference,
                                 mode, alpha, layers, lr, beta, safe, preset, reward)
        yield from _train(ctx, run_id, config, False, request, progress)

    @friendly_errors
    def _create(wb: Workbench, source: str | None, dataset: str, steps: float, k: float, prompts: float, objective: str,
                reference: str, mode: str, alpha: float, layers: str, lr: float, beta: float, safe: str | None = None,
                preset: str = "workbench", reward: str = "") -> tuple[str, Stage2Config]:
        if not source:
            raise ValueError("pick the run whose vectors Stage II starts from (run Stage I first)")
        picked = parse_layers(layers)
        given = dict(steps=int(steps or 0), samples_per_prompt=int(k or 0), prompts_per_step=int(prompts or 0),
                     objective=objective, reference=reference, mode=mode, alpha=float(alpha),
                     layers=list(picked) if picked else None, learning_rate=float(lr), beta=float(beta),
                     safe_response=(safe or "").strip() or None,
                     weights=parse_reward_weights(reward) if (reward or "").strip() else None)
        config, _ = stage2_config(preset, wb.vector(source), given, wb.spec)
        return create_stage2(wb, source, dataset, config), config

    @gpu_task
    @ctx.one_job("Stage II")
    def resume(run_id: str | None, request: gr.Request, progress: gr.Progress = gr.Progress()
               ) -> Iterator[list[Any]]:
        if not run_id:
            raise gr.Error("pick a Stage II run to resume")
        yield from _train(ctx, run_id, None, True, request, progress)

    ui["s2_start"].click(start, [ui["s2_source"], ui["dataset"], ui["s2_steps"], ui["s2_k"], ui["s2_prompts"],
                                 ui["s2_objective"], ui["s2_reference"], ui["s2_mode"], ui["s2_alpha"],
                                 ui["s2_layers"], ui["s2_lr"], ui["s2_beta"], ui["s2_safe"], ui["s2_preset"],
                                 ui["s2_reward"]], outputs,
                         api_name="stage2", show_progress_on=[ui["s2_curves"]])
    def adopt(run_id: str | None, request: gr.Request) -> list[Any]:
        return adopt_recorded_steering(ctx, run_id, request)  # an astra vector's α and layer, Stage II's settings

    ui["s2_source"].input(adopt, ui["s2_source"], [ui["s2_mode"], ui["s2_alpha"], ui["s2_layers"], ui["s2_status"]],
                          api_visibility="private", queue=False)
    ui["s2_preset"].change(friendly_errors(preset_widgets), [ui["s2_preset"]],
                           [ui["s2_objective"], ui["s2_reference"], ui["s2_reward"], ui["s2_steps"], ui["s2_safe"],
                            ui["s2_preset_note"]], queue=False, api_visibility="private")
    ui["s2_resume_go"].click(resume, [ui["s2_resume"]], outputs, api_name="stage2_resume",
                             show_progress_on=[ui["s2_curves"]])
    ui["s2_cancel"].click(ctx.canceller("stage2"), None, ui["s2_status"], queue=False, api_visibility="private")
