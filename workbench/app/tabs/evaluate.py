"""Evaluate tab: unsteered vs steered on a dataset, with intervals, a chart and example generations."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from ...data.sources import dataset_choices, default_dataset
from ...evaluate.answers import shares_table
from ...evaluate.compare import markdown
from ...evaluate.evaluation import EvalConfig
from ...evaluate.report import metrics_table
from ...export.plots import compare_figure, metrics_figure
from ...reproduce.table import figure as table_figure
from ...reproduce.table import markdown as table_markdown
from ...steer.rules import modes
from ..context import (
    AppContext,
    adopt_recorded_steering,
    friendly_errors,
    gpu_task,
    md_text,
    progress_callback,
    run_picker,
)
from ..jobs import APP_JUDGES, run_comparison, run_evaluation, run_reproduction


def build(ctx: AppContext) -> None:
    ui = ctx.ui
    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown("ASR = share of harmful prompts on which the attack succeeded, as decided by the ASR judge "
                    "(auto: the organism's ground truth on organism data, else the keyword judge — which Stage II "
                    "can also use as a reward, so vectors trained on it must be judged by another); over-refusal = "
                    "share of benign prompts refused (keyword judge); benign accuracy = exact match where the "
                    "dataset has reference answers. Intervals: cluster bootstrap, 95% (repeats of one input "
                    "resampled together; none under 10 unique inputs). Records the vectors were trained on are "
                    "refused.")
        with gr.Row():
            ui["eval_run"] = run_picker("Vectors from run", scale=3)
            choices = dataset_choices(ctx.shared.spec)
            test_set = default_dataset(ctx.shared.spec, "test")
            ui["eval_data"] = gr.Dropdown(choices, value=test_set, label="Dataset", allow_custom_value=True)
            ui["eval_limit"] = gr.Number(60, precision=0, label="Records", minimum=1, maximum=5000)
        with gr.Row():
            ui["eval_mode"] = gr.Dropdown(list(modes()), value="adaptive", label="Mode")
            ui["eval_alpha"] = gr.Number(1.0, label="Strength α")
            ui["eval_layers"] = gr.Textbox("", label="Layers (empty = as the run recorded or suggested)")
            ui["eval_tokens"] = gr.Number(EvalConfig.max_new_tokens, precision=0, label="Max new tokens", minimum=1,
                                          maximum=256)
            ui["eval_judge"] = gr.Dropdown(list(APP_JUDGES), value="auto", label="ASR judge")
        with gr.Row():
            ui["eval_go"] = gr.Button("Evaluate", variant="primary")
            ui["eval_cancel"] = gr.Button("Cancel")
        ui["eval_settings_note"] = gr.Markdown()
        ui["eval_summary"] = gr.Markdown()
        ui["eval_plot"] = gr.Plot(label="Unsteered vs steered")
        with gr.Row():
            gr.Markdown("#### Examples, unsteered beside steered")
            ui["eval_show"] = gr.Dropdown(list(SHOW), value=SHOW[0], label="Show", scale=0, min_width=220)
        ui["eval_examples"] = gr.Markdown(elem_id="eval-examples")
        ui["eval_last"] = gr.State(None)  # this visitor's latest evaluation run, for the example filter
        with gr.Accordion("Compare defences: one table, one judge", open=False):
            gr.Markdown("Rows: no defence, the vectors of each picked run (steered with the settings recorded in "
                        "them, else adaptive α = 1 on every layer) and, if given, a safety system prompt. Columns: "
                        "ASR per attack source, utility per source with answers, over-refusal, toxicity.")
            with gr.Row():
                ui["cmp_runs"] = gr.Dropdown([], multiselect=True, label="Vectors from runs", scale=3,
                                             allow_custom_value=True)  # ids are validated by the run store
                ui["cmp_refresh"] = gr.Button("↻ runs", scale=0)
                ui["cmp_data"] = gr.Dropdown(choices, value=[test_set] if test_set else [], multiselect=True,
                                             label="Data sets", scale=2, allow_custom_value=True)
            with gr.Row():
                ui["cmp_limit"] = gr.Number(40, precision=0, label="Records per set", minimum=1, maximum=2000)
                ui["cmp_judge"] = gr.Dropdown(list(APP_JUDGES), value="auto", label="ASR judge")
                ui["cmp_system"] = gr.Textbox("", label="Safety system prompt (a row; empty: none)")
            ui["cmp_go"] = gr.Button("Compare", variant="primary")
            ui["cmp_table"] = gr.Markdown()
            ui["cmp_plot"] = gr.Plot(label="Defences")
        with gr.Accordion("The paper table: every defence × every attack family (reproduce)", open=False):
            gr.Markdown("One recipe builds every defence (no defence, a system prompt, Stage I workbench and astra, "
                        "Stage II spo-vlm with DPO and BiPO, the project's refusal variant; Stage II once per seed), "
                        "every attack set (typographic seen and unseen activities, text, role-play, an unrelated "
                        "image, PGD-toxic at ε 64/255 also made adaptively through each defence, PGD-JB at ε 32/255) "
                        "and utility, each step a run folder. Same as "
                        "`python -m workbench reproduce recipes/organism.toml --out runs/table` (about 40 min on 2 "
                        "CPU cores; the model is busy meanwhile).")
            with gr.Row():
                ui["rep_runs"] = run_picker("Finished table", scale=3)
                ui["rep_show"] = gr.Button("Show", scale=0)
                ui["rep_go"] = gr.Button("Run the organism recipe", variant="primary", scale=0)
                ui["rep_cancel"] = gr.Button("Cancel", scale=0)
            ui["rep_table"] = gr.Markdown(elem_id="reproduce-table")
            ui["rep_plot"] = gr.Plot(label="Defences × attacks")


SHOW = ("changed first", "changed only", "harmful", "benign")
EXAMPLES_SHOWN = 20


def _verdict(row: dict) -> str:
    kind = f" ({row['answer']})" if row.get("answer") else ""  # what the answer is: refused, another activity, ...
    if row["label"] == "harmful" and row.get("attack_success") is not None:
        return ("attack succeeded" if row["attack_success"] else "attack failed") + kind
    return ("refused" if row["refused"] else "answered") + kind


def examples_markdown(rows: list[dict], show: str = SHOW[0], limit: int = EXAMPLES_SHOWN) -> str:
    """Unsteered and steered answers side by side (wrapped text, never markup): rows where steering changed the
    answer first and marked ✱ with the verdicts before → after; filtered by `show` (a SHOW entry or 'source: X')."""
    plain = [r for r in rows if r["condition"] == "unsteered"]
    steered = {r["index"]: r for r in rows if r["condition"] == "steered"}
    pairs = [(r, steered.get(r["index"])) for r in plain]
    changed = {r["index"] for r, s in pairs if s is not None and s["response"] != r["response"]}
    if show == "changed only":
        pairs = [p for p in pairs if p[0]["index"] in changed]
    elif show in ("harmful", "benign"):
        pairs = [p for p in pairs if p[0]["label"] == show]
    elif show.startswith("source: "):
        pairs = [p for p in pairs if p[0]["source"] == show.removeprefix("source: ")]
    pairs.sort(key=lambda pair: pair[0]["index"] not in changed)
    if not pairs:
        return "No examples match this filter."
    lines = [f"{len(changed)} of {len(plain)} answers changed with steering; showing {min(limit, len(pairs))} of "
             f"{len(pairs)} ({md_text(show)}).", "", "| | source · label | prompt | unsteered | steered |",
             "|---|---|---|---|---|"]
    for row, other in pairs[:limit]:
        mark = "✱" if row["index"] in changed else ""
        verdicts = _verdict(row) + (f" → {_verdict(other)}" if other is not None else "")
        lines.append(f"| {mark} | {md_text(row['source'])} · {row['label']}<br>{verdicts} | {md_text(row['prompt'])} | "
                     f"{md_text(row['response']) or '(empty)'} | "
                     f"{md_text(other['response']) if other is not None else '–'} |")
    return "\n".join(lines)


def show_choices(rows: list[dict]) -> list[str]:
    return [*SHOW, *(f"source: {s}" for s in sorted({r["source"] for r in rows}))]


def wire(ctx: AppContext) -> None:
    ui = ctx.ui

    @gpu_task
    @ctx.one_job("evaluation")
    @friendly_errors
    def go(run_id: str | None, dataset: str, limit: float, mode: str, alpha: float, layers: str, tokens: float,
           judge: str, request: gr.Request, progress: gr.Progress = gr.Progress()) -> list[Any]:
        wb = ctx.visitor(request)
        steering = wb.steering_choice(run_id, mode, alpha, layers) if run_id else None
        records, label = wb.dataset(dataset)
        run_eval, metrics, evaluation = run_evaluation(wb, run_id, label, records, steering,
                                                       int(limit or 0), int(tokens or 0), progress_callback(progress),
                                                       ctx.cancel_flag(request, "evaluate"), judge or "auto")
        settings = metrics["settings"]
        steered = (f" · vectors of `{run_id}`: {md_text(settings.get('mode'))}, α = {settings.get('alpha')}, layers "
                   f"{md_text(','.join(map(str, settings.get('layers') or [])))}, steered at "
                   f"{md_text(settings.get('steer_at'))} steps" if steering else " · no vectors picked: unsteered only")
        head = (f"Run `{run_eval}` · data {md_text(label)} · {settings['records']} records "
                f"({settings.get('unique_inputs')} unique inputs){steered} · ASR judge: "
                f"{md_text(settings.get('asr_judge'))} · "
                f"toxicity: {md_text(settings['toxicity_scorer'])} · "
                f"visual consistency: {md_text(settings['clip'] or 'not measured')}")
        rows = evaluation.rows()
        answers = shares_table(metrics)
        answers = f"\n\n**What the answers to harmful prompts are**\n\n{answers}" if answers else ""
        return [head + "\n\n" + metrics_table(metrics) + answers, metrics_figure(metrics), examples_markdown(rows),
                gr.update(choices=show_choices(rows), value=SHOW[0]), run_eval, *ctx.refresh_pickers(request)]

    ui["eval_go"].click(go, [ui["eval_run"], ui["eval_data"], ui["eval_limit"], ui["eval_mode"], ui["eval_alpha"],
                             ui["eval_layers"], ui["eval_tokens"], ui["eval_judge"]],
                        [ui["eval_summary"], ui["eval_plot"], ui["eval_examples"], ui["eval_show"], ui["eval_last"],
                         *ctx.pickers()], api_name="evaluate", show_progress_on=[ui["eval_summary"], ui["eval_plot"]])

    @friendly_errors
    def filter_examples(run_id: str | None, show: str, request: gr.Request) -> str:
        if not run_id:
            return ""
        path = ctx.visitor(request).runs.path(run_id) / "generations.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return examples_markdown(rows, show or SHOW[0])

    ui["eval_show"].input(filter_examples, [ui["eval_last"], ui["eval_show"]], ui["eval_examples"],
                          api_visibility="private")

    def runs_with_vectors(request: gr.Request) -> Any:
        wb = ctx.visitor(request)
        return gr.update(choices=[c for kind in ("stage2", "stage1") for c in wb.runs.choices(kind, wb.spec)])

    @gpu_task
    @ctx.one_job("defence comparison")
    @friendly_errors
    def compare(run_ids: list[str] | None, datasets: list[str] | None, limit: float, judge: str, system: str,
                request: gr.Request, progress: gr.Progress = gr.Progress()) -> list[Any]:
        table = run_comparison(ctx.visitor(request), list(run_ids or []), list(datasets or []), int(limit or 0),
                               judge or "auto", system, progress_callback(progress),
                               ctx.cancel_flag(request, "evaluate"))
        spec = next(iter(table["judges"]))
        return [markdown(table, lambda v: md_text(v).replace('|', '/')), compare_figure(table, spec)]

    ui["cmp_refresh"].click(runs_with_vectors, None, ui["cmp_runs"], api_visibility="private")
    ui["cmp_go"].click(compare, [ui["cmp_runs"], ui["cmp_data"], ui["cmp_limit"], ui["cmp_judge"], ui["cmp_system"]],
                       [ui["cmp_table"], ui["cmp_plot"]], api_name="compare")
    def adopt(run_id: str | None, request: gr.Request) -> list[Any]:
        return adopt_recorded_steering(ctx, run_id, request)

    ui["eval_run"].input(adopt, ui["eval_run"],
                         [ui["eval_mode"], ui["eval_alpha"], ui["eval_layers"], ui["eval_settings_note"]],
                         api_visibility="private")
    ui["eval_cancel"].click(ctx.canceller("evaluate"), None, ui["eval_summary"], queue=False,
                            api_visibility="private")

    @friendly_errors
    def show_table(run_id: str | None, request: gr.Request) -> list[Any]:
        if not run_id:
            raise ValueError("pick a finished table (a reproduce run)")
        folder = ctx.visitor(request).runs.path(run_id)
        if not (folder / "table.json").is_file():
            return [f"Run `{run_id}` has no table yet (cancelled or still running: its finished steps are kept; "
                    "`python -m workbench reproduce recipes/organism.toml --out <its folder> --resume` finishes it).",
                    None]
        table = json.loads((folder / "table.json").read_text(encoding="utf-8"))
        figure = table_figure(table)
        figure.update_layout(width=None)  # the page's width, not the exported figure's
        shown = table_markdown(table, "python -m workbench reproduce recipes/organism.toml", md_text, "<br>",
                               intervals=False)
        return [f"Run `{run_id}` (each Δ's interval is in the run's table.md)\n\n" + shown, figure]

    @gpu_task
    @ctx.one_job("paper table")
    @friendly_errors
    def reproduce(request: gr.Request, progress: gr.Progress = gr.Progress()) -> list[Any]:
        run_id = run_reproduction(ctx.visitor(request), progress_callback(progress),
                                  ctx.cancel_flag(request, "reproduce"))
        return [*show_table(run_id, request), *ctx.refresh_pickers(request)]

    ui["rep_show"].click(show_table, ui["rep_runs"], [ui["rep_table"], ui["rep_plot"]], api_visibility="private")
    ui["rep_go"].click(reproduce, None, [ui["rep_table"], ui["rep_plot"], *ctx.pickers()], api_name="reproduce",
                       show_progress_on=[ui["rep_table"]])
    ui["rep_cancel"].click(ctx.canceller("reproduce"), None, ui["rep_table"], queue=False, api_visibility="private")
