"""The recipe's table from its evaluation folders: per row and column the mean ± sd over seeds, n, unique inputs,
the judge and its independence, and the paired difference to no defence with its interval; as table.json, table.csv,
table.md, a heat-map figure (PNG + SVG) and a notebook that rebuilds the figure from table.json."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.io import atomic_write_text
from ..evaluate.compare import md_cell
from ..evaluate.evaluation import Outcome, paired, summarise
from ..evaluate.independence import INDEPENDENT
from ..export.plots import plotly_text
from .recipe import LOWER_IS_BETTER, METRICS, Recipe
from .sets import group_name, judges_of
from .steps import row_key, rows_of

SEED_STRIDE = 1_000_000  # pooled seeds: record indices kept apart, clusters (inputs) shared


def read_outcomes(folder: Path) -> tuple[list[Outcome], dict[str, Any]]:
    """The judged responses an eval folder saved (its only condition) and its settings."""
    rows = [json.loads(line) for line in (folder / "generations.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    conditions = {row.pop("condition") for row in rows}
    if len(conditions) != 1:
        raise ValueError(f"{folder}: expected one condition per reproduce evaluation, found {sorted(conditions)}")
    settings = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["settings"]
    return [Outcome(**row) for row in rows], settings


def _pool(per_seed: Sequence[list[Outcome]]) -> list[Outcome]:
    """Every seed's outcomes as one list, record indices offset per seed (clusters stay the input)."""
    return [Outcome(**{**o.__dict__, "index": o.index + seed * SEED_STRIDE})
            for seed, outcomes in enumerate(per_seed) for o in outcomes]


def _load_row(folders: Mapping[str, Path]) -> tuple[list[Outcome], dict[str, dict]]:
    """One row-and-seed's outcomes over every group of sets, and each group's evaluation settings. Indices are per
    folder; a column lies in one folder, so pairing by index within a column is sound."""
    outcomes: list[Outcome] = []
    settings: dict[str, dict] = {}
    for group, folder in folders.items():
        found, settings[group] = read_outcomes(folder)
        outcomes += found
    return outcomes, settings


def build_table(recipe: Recipe, folders: Mapping[str, Mapping[str, Path]], out: Path) -> dict[str, Any]:
    """table.json's content: columns (sets), rows (defences) and their cells (each naming its run folders relative
    to `out`)."""
    baseline_row = next(d for d in recipe.defences if d.kind == "none")
    loaded = {d.name: [_load_row(folders[row_key(d, seed)]) for seed in seeds] for d, seeds in rows_of(recipe)}
    plain_outcomes, plain_settings = loaded[baseline_row.name][0]
    columns = []
    for entry in recipe.sets:
        group = group_name(judges_of(entry, recipe))
        columns.append({"name": entry.name, "metric": entry.metric, "role": entry.role, "group": group,
                        "judge": plain_settings[group]["asr_judge"],
                        "toxicity_judge": plain_settings[group].get("toxicity_judge")})
    rows: dict[str, Any] = {}
    for defence, seeds in rows_of(recipe):
        cells: dict[str, Any] = {}
        for column in columns:
            metric = METRICS[column["metric"]]
            per_seed = [[o for o in outcomes if o.source == column["name"]] for outcomes, _ in loaded[defence.name]]
            baseline = [o for o in plain_outcomes if o.source == column["name"]]
            stats = [summarise(p)[metric] for p in per_seed]
            values = [v for v in stats if v]
            if len(values) != len(stats):
                cells[column["name"]] = None  # the metric is not defined on this column's records
                continue
            difference = None
            if defence.name != baseline_row.name:  # every seed paired with the one no-defence run
                difference = paired(_pool([baseline] * len(per_seed)), _pool(per_seed))[metric]
            settings = loaded[defence.name][0][1][column["group"]]
            known = [v["value"] for v in values]
            cells[column["name"]] = {
                "mean": round(statistics.mean(known), 4),
                "sd": round(statistics.stdev(known), 4) if len(known) > 1 else None,
                "per_seed": known, "n": values[0]["n"], "unique_inputs": values[0]["clusters"],
                "ci_first_seed": values[0]["ci"], "difference": difference, "asr_judge": settings["asr_judge"],
                "independence": (settings.get("independence") or {}).get(metric, INDEPENDENT),
                "runs": [os.path.relpath(folders[row_key(defence, seed)][column["group"]], out) for seed in seeds]}
        any_settings = next(iter(loaded[defence.name][0][1].values()))
        rows[defence.name] = {"kind": defence.kind, "preset": defence.preset if defence.kind.startswith("stage")
                              else None, "seeds": [s for s in seeds if s is not None], "cells": cells,
                              "system_prompt": any_settings.get("system_prompt"),
                              "steering": {k: any_settings.get(k) for k in ("mode", "alpha", "layers", "steer_at")}
                              if "mode" in any_settings else None}
    return {"recipe": recipe.name, "model": recipe.model, "train": recipe.train, "seeds": list(recipe.seeds),
            "max_new_tokens": recipe.max_new_tokens,
            "toxicity_scorer": next(iter(plain_settings.values())).get("toxicity_scorer"),
            "columns": columns, "rows": rows,
            "notes": ["mean ± sd over seeds (rows that do not sample run once: greedy generation, no seed)",
                      "Δ: paired difference to no defence, seeds pooled, 95% cluster bootstrap interval by input"]}


def _value(cell: Mapping | None) -> str:
    if not cell:
        return "–"
    spread = f" ± {cell['sd']:.2f}" if cell.get("sd") is not None else ""
    return f"{cell['mean']:.2f}{spread}"


def _delta(cell: Mapping | None) -> str:
    difference = (cell or {}).get("difference")
    if not difference:
        return ""
    interval = f" [{difference['ci'][0]:+.2f}, {difference['ci'][1]:+.2f}]" if difference.get("ci") else ""
    return f"Δ {difference['difference']:+.2f}{interval}"


def decided_by(column: Mapping[str, Any]) -> str:
    """Who decides a column's metric: the ASR judge, the toxicity judge, the keyword refusal judge, or the
    reference answers."""
    return {"asr": f"ASR judge: {column['judge']}", "toxic_rate": f"toxicity judge: {column['toxicity_judge']}",
            "over_refusal": "keyword refusal judge", "refusal_rate": "keyword refusal judge",
            "utility": "reference answers (the eval's utility scoring)"}[column["metric"]]


def markdown(table: Mapping[str, Any], command: str, text: Callable[[object], str] = md_cell, breaks: str = "<br>",
             intervals: bool = True) -> str:
    """table.md: the table (value and Δ per cell), the columns' judges and n, how it was made. Every name passes
    through `text` (the app passes its escaper); `breaks` separates a value from its Δ; without `intervals` the Δ
    is shown without its interval (a narrow screen; table.md keeps them)."""
    columns = table["columns"]
    header = "| defence | seeds | " + " | ".join(text(c["name"]) + (" ↓" if c["metric"] in LOWER_IS_BETTER else " ↑")
                                                 for c in columns) + " |"
    lines = [f"# {text(table['recipe'])}: defences × attack families on {text(table['model'])}", "",
             f"Made by `{command}`. Trained on {text(table['train'])}; {table['max_new_tokens']} new tokens, greedy; "
             f"toxicity scorer: {text(table['toxicity_scorer'])}. " + "; ".join(table["notes"]) + ".", "",
             header, "|---|---|" + "---|" * len(columns)]
    for name, row in table["rows"].items():
        cells = []
        for column in columns:
            cell = row["cells"].get(column["name"])
            flag = " ⚠" if cell and cell.get("independence") not in (None, INDEPENDENT) else ""
            delta = _delta(cell) if intervals else _delta(cell).split(" [")[0]
            cells.append(_value(cell) + flag + (f"{breaks}{delta}" if delta else ""))
        lines.append(f"| {text(name)} | {len(row['seeds']) or 1} | " + " | ".join(cells) + " |")
    lines += ["", "| column | metric | decided by | n | unique inputs |", "|---|---|---|---|---|"]
    baseline = next(iter(table["rows"].values()))
    for column in columns:
        cell = baseline["cells"].get(column["name"]) or {}
        lines.append(f"| {text(column['name'])} | {column['metric']} | {text(decided_by(column))} | "
                     f"{cell.get('n', '–')} | {cell.get('unique_inputs', '–')} |")
    if any(c and c.get("independence") not in (None, INDEPENDENT) for r in table["rows"].values()
           for c in r["cells"].values()):
        lines += ["", "⚠: the row's vectors were trained on this metric (a Stage II reward), so it improves by "
                  "construction."]
    return "\n".join(lines) + "\n"


def to_csv(table: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["defence", "column", "metric", "mean", "sd", "seeds", "n", "unique_inputs", "difference",
                     "difference_low", "difference_high", "asr_judge", "independence", "runs"])
    metric = {c["name"]: c["metric"] for c in table["columns"]}
    for name, row in table["rows"].items():
        for column, cell in row["cells"].items():
            if not cell:
                continue
            difference = cell.get("difference") or {}
            interval = difference.get("ci") or [None, None]
            writer.writerow([name, column, metric[column], cell["mean"], cell["sd"], len(row["seeds"]) or 1,
                             cell["n"], cell["unique_inputs"], difference.get("difference"), *interval,
                             cell["asr_judge"], cell["independence"], " ".join(cell["runs"])])
    return buffer.getvalue()


def figure(table: Mapping[str, Any]) -> go.Figure:
    """Defences × attack columns beside the utility columns; each cell shows its value, coloured by how bad it is
    for the defence (the value where lower is better (↓), one minus it where higher is (↑)): red is worse."""
    rows = list(table["rows"])
    panels = [[c for c in table["columns"] if c["role"] == role] for role in ("attack", "utility")]
    panels = [p for p in panels if p]
    plot = make_subplots(1, len(panels), column_widths=[len(p) for p in panels], horizontal_spacing=0.04,
                         shared_yaxes=True, subplot_titles=[("attacks (lower is better)" if p[0]["role"] == "attack"
                                                             else "utility") for p in panels])
    for index, columns in enumerate(panels, start=1):
        values = [[(table["rows"][r]["cells"].get(c["name"]) or {}).get("mean") for c in columns] for r in rows]
        lower = [c["metric"] in LOWER_IS_BETTER for c in columns]
        badness = [[None if v is None else (v if low else 1 - v) for v, low in zip(line, lower)] for line in values]
        plot.add_trace(go.Heatmap(z=badness, x=[plotly_text(c["name"]) + (" ↓" if low else " ↑")
                                               for c, low in zip(columns, lower)],
                                  y=[plotly_text(r) for r in rows], zmin=0, zmax=1, colorscale="Reds", showscale=False,
                                  text=[["–" if v is None else f"{v:.2f}" for v in line] for line in values],
                                  texttemplate="%{text}", hoverinfo="skip", xgap=2, ygap=2), 1, index)
    plot.update_yaxes(autorange="reversed")
    plot.update_xaxes(tickangle=-30)
    plot.update_layout(title=dict(text=f"{plotly_text(table['recipe'])}: defences × attacks on "
                                  f"{plotly_text(table['model'])}<br><sup>mean over seeds {table['seeds']}; n, "
                                  "judges and Δ in table.md</sup>",
                                  x=0.02), template="simple_white", height=230 + 44 * len(rows),
                       width=260 + 110 * len(table["columns"]), margin=dict(l=250, r=30, t=100, b=130),
                       font=dict(family="Helvetica, Arial, sans-serif", size=14))
    return plot


NOTEBOOK_CODE = """import json
from pathlib import Path

from workbench.reproduce.table import figure

table = json.loads(Path("table.json").read_text())
figure(table)"""


def write_outputs(table: Mapping[str, Any], out: Path, command: str, plots: bool = True) -> dict[str, Path]:
    """table.json, table.csv, table.md, figure.png/svg and table.ipynb in `out`."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    paths = {name: out / f"table.{name}" for name in ("json", "csv", "md")}
    atomic_write_text(paths["json"], json.dumps(table, indent=1))
    atomic_write_text(paths["csv"], to_csv(table))
    atomic_write_text(paths["md"], markdown(table, command))
    notebook = new_notebook(cells=[new_markdown_cell(f"# {table['recipe']}: the figure from table.json\n\nMade by "
                                                     f"`{command}`; every cell of table.json names its run folder."),
                                   new_code_cell(NOTEBOOK_CODE)])
    paths["notebook"] = out / "table.ipynb"
    atomic_write_text(paths["notebook"], nbformat.writes(notebook))
    if plots:
        from ..export.plots import export

        for path in export({"figure": figure(table)}, out):
            paths[path.suffix[1:]] = path
    return paths
