"""Defence comparison: one table like the CARE/ASTRA tables, every defence on every data set under one judge.

Rows: no defence, each steering defence (with its mode/α/layers/steer_at and vector provenance) and, when
given, a safety system prompt (a non-steering baseline). Columns: ASR per attack source (harmful sources),
utility per utility source (benign accuracy where records have references), over-refusal, toxicity; each
cell a value with its cluster bootstrap interval, n and unique inputs, from the same code as `eval`
(`evaluation.summarise`), so a row agrees with `eval` on the same data and settings.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_text
from ..core.models import VLM
from ..core.progress import ProgressFn
from ..core.records import Record, dataset_hash
from ..rewards.refusal import keyword_judge
from ..rewards.toxicity import ToxicityScorer
from ..rewards.visual import ClipScorer
from ..steer.steering import Steering
from .answers import subject_told
from .evaluation import EvalConfig, Outcome, evaluate, summarise
from .independence import INDEPENDENT, reward_overlap
from .judges import AsrJudge, choose_judge, choose_toxicity_judge, trained_on_keyword_judge

NO_DEFENCE = "no defence"


@dataclass(frozen=True)
class Defence:
    """A row of the table: a steering, a system prompt, or neither (the undefended model)."""

    name: str
    steering: Steering | None = None
    system_prompt: str | None = None

    def settings(self) -> dict[str, Any]:
        if self.steering is not None:
            meta = self.steering.vector.metadata
            return {**self.steering.describe(), "stage": meta.get("stage"), "run": meta.get("run"),
                    "preset": meta.get("preset", "workbench")}
        if self.system_prompt is not None:
            return {"system_prompt": self.system_prompt}
        return {}


def _columns(outcomes: Sequence[Outcome], resamples: int, seed: int, told: bool) -> dict[str, dict | None]:
    """The row's cells on one data set: ASR per harmful source, utility per source with references, over-refusal
    and toxicity over the set."""
    cells: dict[str, dict | None] = {}
    for source in sorted({o.source for o in outcomes}):
        group = [o for o in outcomes if o.source == source]
        stats = summarise(group, resamples, seed, told)
        if any(o.label == "harmful" for o in group):
            cells[f"ASR · {source}"] = stats["asr"]
        if any(o.correct is not None for o in group):
            cells[f"utility · {source}"] = stats["benign_accuracy"]
    overall = summarise(outcomes, resamples, seed, told)
    cells["over-refusal"] = overall["over_refusal"]
    cells["toxicity"] = overall["mean_toxicity"]
    if overall.get("toxic_rate"):
        cells["toxic answers"] = overall["toxic_rate"]
    if overall.get("changed_subject"):  # organism data: a defence that answers another activity, not a refusal
        cells["changed subject"] = overall["changed_subject"]
    return cells


def run_compare(vlm: VLM, data: Mapping[str, Sequence[Record]], defences: Sequence[Defence],
                toxicity: ToxicityScorer, clip: ClipScorer | None = None, judge: str | None = None,
                config: EvalConfig | None = None, allow_overlap: bool = False, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None, show_bar: bool = True) -> dict[str, Any]:
    """The comparison table as a dict (rows x data sets x columns), with the judge and settings it used."""
    config = config or EvalConfig()
    if not data:
        raise ValueError("give at least one data set to compare on")
    names = [d.name for d in defences]
    if len(set(names)) != len(names) or NO_DEFENCE in names:
        raise ValueError(f"defence names must be distinct and not {NO_DEFENCE!r}; got {names}")
    rows = [Defence(NO_DEFENCE), *defences]
    judges: dict[str, AsrJudge] = {}
    toxic_judges: dict[str, AsrJudge | None] = {}  # the independent toxicity judge per data set (none: not measured)
    for spec in data:  # one judge per data set (loaded once), independent of every defence's training rewards
        judges[spec] = choose_judge(judge, spec, None)
        toxic_judges[spec] = choose_toxicity_judge("auto", spec)
        for defence in defences:
            if defence.steering is not None and judges[spec].keyword_based \
                    and trained_on_keyword_judge(defence.steering.vector.metadata):
                if judge in (None, "", "auto"):
                    raise ValueError(f"{defence.name} was trained with the keyword refusal judge as a Stage II "
                                     "reward, so it cannot also score it; choose --judge harmbench, "
                                     "classifier:<hub id>, or --judge keyword to accept a judge that is not "
                                     "independent")
                judges[spec] = AsrJudge(judges[spec].name + f" [not independent of {defence.name}'s reward]",
                                        judges[spec].decide, True)
    table: dict[str, Any] = {"rows": {}, "judges": {s: j.name for s, j in judges.items()},
                             "data": {s: {"records": len(r), "hash": dataset_hash(r)} for s, r in data.items()},
                             "settings": {"model": vlm.spec, "toxicity_scorer": toxicity.name,
                                          "clip": clip.name if clip else None, "max_new_tokens": config.max_new_tokens,
                                          "resamples": config.resamples, "seed": config.seed}}
    for row in rows:
        cells: dict[str, Any] = {}
        for spec, records in data.items():
            row_config = replace(config, system_prompt=row.system_prompt)
            result = evaluate(vlm, records, row.steering, toxicity, clip, config=row_config, progress=progress,
                              cancel=cancel, show_bar=show_bar, asr_judge=judges[spec], allow_overlap=allow_overlap,
                              baseline=row.steering is None, toxicity_judge=toxic_judges[spec])
            condition = "steered" if row.steering is not None else "unsteered"
            cells[spec] = _columns(result.outcomes[condition], config.resamples, config.seed,
                                   subject_told(result.settings))
        vector = row.steering.vector.metadata if row.steering is not None else None
        independence = reward_overlap(vector, {"toxicity_scorer": toxicity.name, "clip": clip.name if clip else None,
                                               "refusal_judge": keyword_judge.__name__})
        table["rows"][row.name] = {"settings": row.settings(), "cells": cells, "independence": independence}
    return table


# a column's name (before " · source") -> the metric it shows
COLUMN_METRIC = {"ASR": "asr", "utility": "benign_accuracy", "over-refusal": "over_refusal",
                 "toxicity": "mean_toxicity", "toxic answers": "toxic_rate", "changed subject": "changed_subject"}


def _cell(stat: Mapping | None) -> str:
    if not stat:
        return "–"
    interval = f" [{stat['ci'][0]:.2f}, {stat['ci'][1]:.2f}]" if stat.get("ci") else " (no interval: <10 inputs)"
    return f"{stat['value']:.3f}{interval}"


def md_cell(value: object) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def markdown(table: Mapping[str, Any], text: Callable[[object], str] = md_cell) -> str:
    """The table as Markdown: one block per data set, rows = defences, with the judge that decided ASR. Every
    name, setting and label passes through `text` (the app passes its escaper: they render as text)."""
    lines = [f"# Defence comparison: {text(table['settings']['model'])}", "",
             f"Toxicity: {table['settings']['toxicity_scorer']} · {table['settings']['max_new_tokens']} new tokens · "
             "cells: mean [cluster bootstrap 95% interval]", ""]
    for spec, judge in table["judges"].items():
        columns: list[str] = []
        for row in table["rows"].values():
            columns += [c for c in row["cells"][spec] if c not in columns]
        lines += [f"## {text(spec)} ({table['data'][spec]['records']} records) · ASR judge: {text(judge)}", "",
                  "| defence | settings | " + " | ".join(text(c) for c in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for name, row in table["rows"].items():
            settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items() if v is not None) or "–"
            trained = {k for k, v in (row.get("independence") or {}).items() if v != INDEPENDENT}
            cells = [_cell(row["cells"][spec].get(c)) + (" ⚠" if COLUMN_METRIC.get(c.split(" · ")[0]) in trained
                                                          else "") for c in columns]
            lines.append(f"| {text(name)} | {text(settings)} | " + " | ".join(cells) + " |")
        lines.append("")
    if any(v != INDEPENDENT for row in table["rows"].values() for v in (row.get("independence") or {}).values()):
        lines += ["⚠: the row's vectors were trained on this metric (their Stage II reward optimised it), so it "
                  "improves by construction; compare.json says how (`independence`).", ""]
    return "\n".join(lines)


def save(table: Mapping[str, Any], out: str | Path, plots: bool = True) -> dict[str, Path]:
    """compare.json, compare.md and (with `plots`) figures/compare_<data>.png|svg."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "compare.json", "markdown": folder / "compare.md"}
    atomic_write_text(paths["json"], json.dumps(table, indent=2))
    atomic_write_text(paths["markdown"], markdown(table))
    if plots:
        from ..export.plots import compare_figure, export

        figures = {f"compare_{index}": compare_figure(table, spec) for index, spec in enumerate(table["judges"])}
        for exported in export(figures, folder / "figures"):
            paths[exported.name] = exported
    return paths
