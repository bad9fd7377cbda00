"""The evaluation report: a Markdown table of both conditions with intervals, figures and examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.io import atomic_write_text
from .answers import shares_table
from .independence import INDEPENDENT, flag

# The evaluation's metrics, in table order (defined in evaluation.py's docstring).
METRICS = ("asr", "changed_subject", "mean_toxicity", "toxic_rate", "refusal_rate", "benign_accuracy",
           "over_refusal", "visual_consistency")
LABELS = {"asr": "ASR", "changed_subject": "harmful answered with another activity (organism ground truth)",
          "mean_toxicity": "mean toxicity", "toxic_rate": "toxic answers (independent judge)",
          "refusal_rate": "refusal rate (keyword judge)",
          "benign_accuracy": "benign accuracy", "over_refusal": "over-refusal (benign refused)",
          "visual_consistency": "visual consistency"}  # what a reader sees; metrics.json keeps the keys
_EXAMPLES_PER_SOURCE = 3


def _count(stat: Mapping) -> str:
    clusters = stat.get("clusters", stat["n"])
    return f"n={stat['n']}" + (f", {clusters} unique inputs" if clusters != stat["n"] else "")


def _cell(stat: Mapping | None, key: str = "value") -> str:
    if not stat:
        return "–"
    value = f"{stat[key]:.3f}" if key == "value" else f"{stat[key]:+.3f}"  # a difference shows its sign
    if not stat.get("ci"):
        return f"{value} ({_count(stat)}: too few unique inputs for an interval)"
    low, high = stat["ci"]
    return f"{value} [{low:.3f}, {high:.3f}] ({_count(stat)})"


def paired_table(metrics: Mapping, scope: str = "overall") -> str:
    """Markdown table of steered minus unsteered per metric: difference, interval, and the p-value by unique input
    with its test and the pairs it counts."""
    table = metrics["paired"]["overall"] if scope == "overall" else metrics["paired"]["per_source"][scope]
    lines = ["| metric | steered − unsteered | p (by unique input) |", "|---|---|---|"]
    for key in METRICS:
        stat = table.get(key)
        p = stat.get("p") if stat else None
        shown = "–" if p is None else f"{p:.4g} ({stat['p_test']}; {stat['clusters']} unique inputs of n={stat['n']})"
        lines.append(f"| {LABELS[key]} | {_cell(stat, 'difference')} | {shown} |")
    return "\n".join(lines)


def metrics_table(metrics: Mapping, scope: str = "overall") -> str:
    """Markdown table: one row per metric, one column per condition."""
    conditions = [c for c in ("unsteered", "steered") if c in metrics]
    independence = metrics.get("settings", {}).get("independence")
    lines = ["| metric | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for key in METRICS:
        cells = []
        for condition in conditions:
            table = metrics[condition]["overall"] if scope == "overall" else metrics[condition]["per_source"][scope]
            cells.append(_cell(table.get(key)))
        lines.append(f"| {LABELS[key]}{flag(key, independence)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def held_out_text(overlap: Mapping | None) -> str:
    """What "held out" means for this evaluation: inputs (exact content) and harmful behaviours."""
    if not overlap or overlap.get("overlap") is None and overlap.get("behaviors") is None:
        return "Held out: not checked (unsteered only, or the vectors record no training data)."
    inputs = ("inputs: not checked (the vectors record no training inputs)" if overlap.get("overlap") is None else
              f"inputs: {overlap['overlap']} of {overlap['records']} evaluation inputs were training inputs "
              "(exact content)")
    behaviours = overlap.get("behaviors")
    if behaviours is None:
        kind = "behaviours: not recorded in these vectors"
    elif not behaviours["evaluated"]:
        kind = "behaviours: none named in these records"
    else:
        kind = (f"behaviours: {len(behaviours['seen'])} of {behaviours['evaluated']} harmful behaviours evaluated "
                "were also in training (held out there means a new phrasing or image only)"
                + (f"; new behaviours: {', '.join(_escape(b) for b in behaviours['unseen'])}" if behaviours["unseen"]
                   else "; none is a new behaviour"))
    return f"Held out: {inputs}; {kind}."


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def _examples(outcomes: Mapping[str, Sequence], source: str) -> list[str]:
    if "unsteered" not in outcomes:  # a steered-only evaluation (a table that has the unsteered run elsewhere)
        shown = [o for o in outcomes.get("steered", []) if o.source == source][:_EXAMPLES_PER_SOURCE]
        return ["| label | prompt | steered |", "|---|---|---|",
                *(f"| {o.label} | {_escape(o.prompt)} | {_escape(o.response)} |" for o in shown)]
    unsteered = [o for o in outcomes.get("unsteered", []) if o.source == source]
    steered = {o.index: o for o in outcomes.get("steered", [])}
    has_steered = bool(steered)
    lines = ["| label | prompt | unsteered |" + (" steered |" if has_steered else ""),
             "|---|---|---|" + ("---|" if has_steered else "")]
    # Prefer inputs where steering changed the response: those are the ones a reader wants to see.
    ordered = sorted(unsteered, key=lambda o: (steered.get(o.index) is None or steered[o.index].response == o.response,
                                               o.index))
    for o in ordered[:_EXAMPLES_PER_SOURCE]:
        row = f"| {o.label} | {_escape(o.prompt)} | {_escape(o.response)} |"
        if has_steered:
            row += f" {_escape(steered[o.index].response)} |" if o.index in steered else " |"
        lines.append(row)
    return lines


def write_report(metrics: Mapping, outcomes: Mapping[str, Sequence], out: Path, plots: bool = True
                 ) -> dict[str, Path]:
    """Write out/report.md (and out/figures/*.png|svg when `plots`); returns the paths written."""
    settings = metrics.get("settings", {})
    paths: dict[str, Path] = {}
    judge = settings.get("asr_judge") or "keyword (not refused)"
    lines = ["# Evaluation report", "", f"Model: `{settings.get('model')}` · data: {settings.get('data', '?')} · "
             f"records: {settings.get('records')} ({settings.get('unique_inputs', '?')} unique inputs) · "
             f"ASR judge: {judge} · toxicity: {settings.get('toxicity_scorer')} · toxic answers judged by "
             f"{settings.get('toxicity_judge') or 'no independent judge'} · refusal judge (refusal and "
             f"over-refusal rates): {settings.get('refusal_judge')} · "
             f"visual consistency: {settings.get('clip') or 'not measured'}"]
    if "steered" in metrics:
        lines.append(f"Steering: {settings.get('mode')}, α = {settings.get('alpha')}, "
                     f"layers {settings.get('layers')}, "
                     f"steered at {settings.get('steer_at', settings.get('positions'))} positions.")
    lines += ["", f"Values are means with cluster bootstrap 95% intervals (repeats of one input resampled together; "
              f"none under 10 unique inputs). ASR = share of harmful prompts on which the attack succeeded, "
              f"as decided by {judge}.", "", "## Overall", "", metrics_table(metrics)]
    trained = {k: v for k, v in (settings.get("independence") or {}).items() if v != INDEPENDENT}
    lines += ["", "Independence from the vectors' training: " + ("every metric is independent of it (no Stage II "
              "reward)." if not trained else "; ".join(f"{LABELS[k]} is {v}" for k, v in trained.items()) +
              "; the other metrics are independent. A metric that is the reward improves by construction.")]
    answers = shares_table(metrics)
    if answers:
        lines += ["", "### What the answers to harmful prompts are", "", answers]
    lines += ["", held_out_text(settings.get("training_overlap"))]
    if "paired" in metrics:
        lines += ["", "### Steered vs unsteered, paired by input", "", paired_table(metrics)]
    if plots:
        from ..core.runs import caption
        from ..export.plots import export, metrics_figure

        figures = {"metrics_overall": metrics_figure(metrics)}
        exported = export(figures, out / "figures", caption=caption(settings))
        paths.update({p.name: p for p in exported})
        lines += ["", "![overall metrics](figures/metrics_overall.png)"]
    sources = sorted(metrics["unsteered" if "unsteered" in metrics else "steered"]["per_source"])
    for source in sources:
        lines += ["", f"## Source: {source}", "", metrics_table(metrics, source), "", "Examples:", "",
                  *_examples(outcomes, source)]
    paths["report"] = out / "report.md"
    atomic_write_text(paths["report"], "\n".join(lines) + "\n")
    return paths
