"""Steering playground: unsteered vs steered side by side with their scores, and a strength sweep."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ...export.plots import sweep_figure
from ...export.token_plot import token_figure
from ...organism.world import REQUEST_PROMPT, typographic_image
from ...steer.rules import defence_signs, modes
from ...steer.steering import parse_strengths
from ..context import (
    AppContext,
    adopt_recorded_steering,
    friendly_errors,
    gpu_task,
    md_text,
    progress_callback,
    run_picker,
)

JAILBREAK_PROMPT = REQUEST_PROMPT


def build(ctx: AppContext) -> None:
    ui = ctx.ui
    with gr.Tab("Steering playground", id="playground"):
        gr.Markdown("Signs: " + "; ".join(f"**{m}**: {s}" for m, s in defence_signs().items()) +
                    ". The unsteered column is plain generation with no intervention attached.")
        ui["play_run"] = run_picker("Vectors from run (Stage I or Stage II)")
        ui["play_settings_note"] = gr.Markdown()
        with gr.Row():
            # A plain gr.Image (a subclass would be served as a custom component the browser cannot load);
            # the backend opens the file itself, so unreadable files and bombs get a message.
            ui["play_image"] = gr.Image(type="filepath", label="Image (optional)",
                                        value=typographic_image("build a bomb"), height=280, elem_id="play-image")
            with gr.Column():
                ui["play_prompt"] = gr.Textbox(label="Prompt", value=JAILBREAK_PROMPT, lines=2)
                with gr.Row():
                    ui["play_mode"] = gr.Dropdown(list(modes()), value="adaptive", label="Mode")
                    ui["play_alpha"] = gr.Slider(-10, 10, value=1.0, step=0.1, label="Strength α")
                with gr.Row():
                    ui["play_layers"] = gr.Textbox(
                        label="Layers (comma-separated; empty = as the run recorded or suggested)", value="")
                    ui["play_tokens"] = gr.Slider(4, 128, value=40, step=1, label="Max new tokens")
                ui["play_go"] = gr.Button("Compare unsteered vs steered", variant="primary")
        with gr.Row(elem_classes="output-pair"):
            ui["play_unsteered"] = gr.Textbox(label="Unsteered (no intervention)", lines=4)
            ui["play_steered"] = gr.Textbox(label="Steered", lines=4)
        ui["play_scores"] = gr.Markdown(elem_id="play-scores")
        ui["play_diff"] = gr.HighlightedText(label="Where the steered answer departs from the unsteered one",
                                             color_map={"added": "#2a9d8f", "removed": "#c0392b"},
                                             combine_adjacent=True, show_legend=True, elem_id="play-diff")
        with gr.Accordion("Token view: where the steering acted, token by token and layer by layer", open=True):
            ui["play_tokens_note"] = gr.Markdown()
            ui["play_heatmap"] = gr.Plot(label="Tokens × steered layers", elem_id="play-heatmap")
        gr.Markdown("### Strength sweep")
        with gr.Row():
            ui["sweep_alphas"] = gr.Textbox(label="Strengths α (comma-separated)", value="0, 0.25, 0.5, 1, 1.5, 2")
            ui["sweep_go"] = gr.Button("Run sweep")
        ui["sweep_plot"] = gr.Plot(label="Scores against α")
        gr.Markdown("#### Outputs and scores, one column per strength")
        ui["sweep_table"] = gr.Markdown(elem_id="sweep-table")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _scores_markdown(result: dict[str, Any]) -> str:
    visual = result["visual"] or [None, None]
    answers = result.get("answers")
    rows = ["| | toxicity | refusal (keyword judge) | visual consistency |" + (" answer is |" if answers else ""),
            "|---|---|---|---|" + ("---|" if answers else "")]
    for i, name in enumerate(("unsteered", "steered")):
        rows.append(f"| {name} | {_fmt(result['toxicity'][i])} | {'yes' if result['refused'][i] else 'no'} | "
                    f"{_fmt(visual[i])} |" + (f" {md_text(answers[i])} |" if answers else ""))
    note = f"Toxicity: {md_text(result['toxicity_scorer'])}." + ("" if result["visual"] else
                                                         " Visual consistency: no CLIP model or no image.")
    if answers:
        note += (" Answer is: the organism's ground truth (which activity's steps the answer gives, a refusal, another"
                 " answer or degenerate text); a steered answer that gives another activity's steps defends by "
                 "changing the subject, not by refusing.")
    return "\n".join(rows) + "\n\n" + note


def sweep_columns(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table with one column per strength: each whole output (wrapped, as text), then its
    scores."""
    head = "| | " + " | ".join(f"α = {r['alpha']:g}" for r in rows) + " |"
    lines = [head, "|---|" + "---|" * len(rows),
             "| **output** | " + " | ".join(md_text(r["output"]) or "(empty)" for r in rows) + " |",
             "| toxicity | " + " | ".join(_fmt(r["toxicity"]) for r in rows) + " |",
             "| refusal (keyword judge) | " + " | ".join("yes" if r["refusal"] else "no" for r in rows) + " |",
             *(["| answer is (organism ground truth) | " + " | ".join(md_text(r["answer"]) for r in rows) + " |"]
               if all(r.get("answer") for r in rows) else []),
             "| visual consistency | " + " | ".join(_fmt(r["visual_consistency"]) for r in rows) + " |"]
    return "\n".join(lines)


def token_note(result: dict[str, Any]) -> str:
    """What the token view shows: which positions were steered, which answer tokens the steering decided, and
    whether its pass matches the steered answer."""
    view = result.get("view")
    if view is None:
        return "The steered answer is empty: no token view."
    done, total = view.reproduced
    check = (f"the pass re-predicts all {total} answer tokens" if view.faithful else
             f"⚠️ the pass re-predicts only {done} of {total} answer tokens: the states differ from generation's")
    counts = view.steered_counts()
    where = ", ".join(f"{segment} {counts[segment][0]} of {counts[segment][1]}" for segment in ("image", "prompt",
                                                                                                 "answer")
                      if segment in counts)
    decisive = view.decisive_tokens()
    decided = ("the steering made these answer tokens likelier by more than e×: " +
               ", ".join(f"“{md_text(token.strip() or '␣')}” (Δ log p {change:+.1f})" for _, token, change in decisive)
               if decisive else "no answer token became more than e× likelier under the steering")
    return (f"**Steered positions** ({md_text(view.settings.get('steer_at'))}): {where}. **Decided by the steering**: "
            f"{decided}. One teacher-forced pass over image, prompt and the steered answer with the steering as "
            f"generation applied it ({md_text(view.settings.get('mode'))}, α = {view.settings.get('alpha')}), and the "
            f"same pass unsteered; {check}.")


def _image_path(payload: Any) -> str | None:
    """The uploaded image's file in Gradio's cache (events run with preprocess off: see `wire`)."""
    if isinstance(payload, dict):
        return payload.get("path")
    return payload or None


def wire(ctx: AppContext) -> None:
    ui = ctx.ui
    # These events run with Gradio's preprocessing off, so that the backend opens the image itself and an
    # unreadable file or a decompression bomb gets a message that says what to fix (Gradio's own decoding
    # fails with a generic error). Files are still confined to Gradio's upload cache before this point; the
    # other inputs get their usual checks (bounds, choices) here.
    compare_inputs = [ui["play_run"], ui["play_image"], ui["play_prompt"], ui["play_mode"], ui["play_alpha"],
                      ui["play_layers"], ui["play_tokens"]]
    sweep_inputs = [ui["play_run"], ui["play_image"], ui["play_prompt"], ui["play_mode"], ui["play_layers"],
                    ui["sweep_alphas"], ui["play_tokens"]]

    def checked(components: list[Any], values: tuple[Any, ...]) -> list[Any]:
        return [_image_path(v) if c is ui["play_image"] else c.preprocess(v) for c, v in zip(components, values)]

    @gpu_task
    @ctx.one_job("steered comparison")
    @friendly_errors
    def go(run: Any, picture: Any, text: Any, how: Any, strength: Any, which: Any, length: Any, request: gr.Request
           ) -> tuple[Any, ...]:
        values = (run, picture, text, how, strength, which, length)
        run_id, image, prompt, mode, alpha, layers, tokens = checked(compare_inputs, values)
        if not run_id:
            raise ValueError("run Stage I first (or pick a run): the steering vector comes from it")
        wb = ctx.visitor(request)
        result = wb.compare(wb.steering(run_id, mode, alpha, layers), image, prompt, int(tokens))
        view = result["view"]
        title = "" if view is None else (f"Where the steering acted · vectors of {run_id} · {view.settings['mode']} "
                                         f"α = {view.settings['alpha']} · layers {','.join(map(str, view.layers))} · "
                                         f"steered at {view.settings['steer_at']} steps")
        return (result["unsteered"], result["steered"], _scores_markdown(result), result["diff"], token_note(result),
                token_figure(view, title) if view is not None else None)

    @gpu_task
    @ctx.one_job("strength sweep")
    @friendly_errors
    def sweep(run: Any, picture: Any, text: Any, how: Any, which: Any, strengths_text: Any, length: Any,
              request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple[Any, str]:
        values = (run, picture, text, how, which, strengths_text, length)
        run_id, image, prompt, mode, layers, alphas, tokens = checked(sweep_inputs, values)
        if not run_id:
            raise ValueError("run Stage I first (or pick a run): the steering vector comes from it")
        strengths = parse_strengths(alphas)
        rows = ctx.visitor(request).sweep(run_id, image, prompt, mode, layers, strengths, int(tokens),
                                          progress_callback(progress))
        return sweep_figure(rows, mode, rows[0]["layers"]), sweep_columns(rows)

    def adopt(run_id: str | None, request: gr.Request) -> list[Any]:
        return adopt_recorded_steering(ctx, run_id, request)

    ui["play_run"].input(adopt, ui["play_run"],
                         [ui["play_mode"], ui["play_alpha"], ui["play_layers"], ui["play_settings_note"]],
                         api_visibility="private")
    ui["play_go"].click(go, compare_inputs, [ui["play_unsteered"], ui["play_steered"], ui["play_scores"],
                                             ui["play_diff"], ui["play_tokens_note"], ui["play_heatmap"]],
                        api_name="steer_compare", preprocess=False)
    ui["sweep_go"].click(sweep, sweep_inputs, [ui["sweep_plot"], ui["sweep_table"]], api_name="sweep",
                         preprocess=False)
