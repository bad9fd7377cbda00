"""A recipe's columns as records: each set's data (or the attack it names) filtered, sampled, optionally with one
unrelated image attached, its source renamed to the column; grouped by the pair of judges that score them (one
evaluation per group and row)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.records import Record, read_jsonl, record_key
from ..core.sampling import stratified_sample
from ..data.sources import load_dataset
from .recipe import Recipe, RecipeError, SetRecipe


def _attached(image: str) -> Image.Image:
    """The one image a set attaches to every record: white, black, seeded noise, or a file."""
    if image in ("white", "black"):
        return Image.new("RGB", (64, 64), image)
    if image == "noise":
        return Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with Image.open(image) as opened:
        return opened.convert("RGB")


def set_records(entry: SetRecipe, attacks: dict[str, Path], default_limit: int | None) -> list[Record]:
    """A column's records: its data filtered and sampled, the image swapped when asked, the source = the column."""
    records = read_jsonl(attacks[entry.data[7:]]) if entry.data.startswith("attack:") else load_dataset(entry.data)
    chosen = [r for r in records if (entry.label is None or r.label == entry.label)
              and (entry.source is None or r.source == entry.source)
              and (not entry.behaviors or r.behavior in entry.behaviors)
              and r.behavior not in entry.exclude_behaviors]
    if not chosen:
        raise RecipeError(f"set {entry.name}: no record of {entry.data} passes its filters")
    chosen = stratified_sample(chosen, entry.limit or default_limit)
    if entry.image:
        image = _attached(entry.image)
        return [replace(r, source=entry.name, image_data=image, image_path=None) for r in chosen]
    return [replace(r, source=entry.name) for r in chosen]


def judges_of(entry: SetRecipe, recipe: Recipe) -> tuple[str, str]:
    """The set's (ASR judge, toxicity judge) names, auto resolved by where its records come from."""
    origin = next((a.prompts for a in recipe.attacks if f"attack:{a.name}" == entry.data), entry.data)
    judge = entry.judge if entry.judge != "auto" else recipe.judge
    if judge == "auto":
        judge = "organism" if origin.startswith("organism:") else "keyword"
    toxicity = entry.toxicity_judge
    if toxicity == "auto":
        toxicity = "organism" if origin.startswith("organism:") else "none"
    return judge, toxicity


def group_sets(recipe: Recipe, attacks: dict[str, Path]) -> tuple[dict[tuple[str, str], list[Record]], list[dict]]:
    """Every column's records grouped by their pair of judges (one evaluation per group and row), and what each
    column holds (sets.json). `attacks`: each attack's dataset.jsonl, as this row meets it."""
    groups: dict[tuple[str, str], list[Record]] = {}
    described = []
    for entry in recipe.sets:
        records = set_records(entry, attacks, recipe.limit)
        judges = judges_of(entry, recipe)
        groups.setdefault(judges, []).extend(records)
        adaptive = any(a.adaptive and entry.data == f"attack:{a.name}" for a in recipe.attacks)
        described.append({"name": entry.name, "data": entry.data, "metric": entry.metric, "role": entry.role,
                          "judge": judges[0], "toxicity_judge": judges[1], "records": len(records),
                          "unique_inputs": len({record_key(r) for r in records}),
                          **({"adaptive": "each defended row is attacked through its own steering"} if adaptive
                             else {}),
                          "filters": {k: v for k, v in (("label", entry.label), ("source", entry.source),
                                                         ("behaviors", list(entry.behaviors)),
                                                         ("exclude_behaviors", list(entry.exclude_behaviors)),
                                                         ("image", entry.image)) if v}})
    return groups, described


def save_sets(out: Path, described: list[dict]) -> None:
    """sets.json, once: a resumed run whose sets changed is refused (nothing was changed)."""
    path = out / "sets.json"
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != described:
        raise RecipeError(f"{path} describes other sets than the recipe now makes (their data, filters or sizes "
                          "changed); use a new --out (nothing was changed)")
    if not path.is_file():
        path.write_text(json.dumps(described, indent=1), encoding="utf-8")


def slug(name: str) -> str:
    """A folder name for a recipe entry's name."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-")[:60] or "x"


def group_name(judges: tuple[str, str]) -> str:
    return slug(f"asr-{judges[0]}-tox-{judges[1]}")


