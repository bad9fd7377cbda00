"""A reproduce recipe (TOML): the model, the defences' training data, the attacks to generate, the sets measured
(columns) and the defences (rows), the seeds. Read strictly: an unknown key or a bad value is one line naming it.

```toml
name = "organism"
model = "organism"
train = "organism:train"          # what every defence trains on
seeds = [0, 1, 2]                 # Stage II trains once per seed; deterministic rows run once
max_new_tokens = 24

[[attacks]]                       # generated attack sets (PGD), each a run folder
name = "PGD-JB"
prompts = "organism:test"
source = "text"
targets = "affirmative"
epsilon = "32/255"

[[sets]]                          # columns
name = "PGD-JB ε32"
data = "attack:PGD-JB"            # a data spec, or attack:<name> for a generated one
metric = "asr"                    # asr | utility | over_refusal | toxic_rate | refusal_rate

[[defences]]                      # rows
name = "ASTRA"
kind = "stage1"                   # none | system-prompt | stage1 | stage2
preset = "astra"
```
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..attacks.pgd import parse_epsilon
from ..evaluate.judges import JUDGES, TOXICITY_JUDGES
from ..stage1.presets import PRESETS as STAGE1_PRESETS
from ..stage2.loop import Stage2Config
from ..stage2.presets import PRESETS as STAGE2_PRESETS

# a column's metric -> the evaluation metric it reads
METRICS = {"asr": "asr", "utility": "benign_accuracy", "over_refusal": "over_refusal", "toxic_rate": "toxic_rate",
           "refusal_rate": "refusal_rate"}
LOWER_IS_BETTER = {"asr", "over_refusal", "toxic_rate"}
DEFENCE_KINDS = ("none", "system-prompt", "stage1", "stage2")
STEERING_KEYS = ("mode", "alpha", "layers", "steer_at")
IMAGES = ("white", "black", "noise")  # what `image` may name besides a file: the unrelated-image baseline


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file, the entry and what to fix."""


@dataclass(frozen=True)
class AttackRecipe:
    """A generated attack set: PGD toward `targets` with the prompts of `prompts` (filtered by label and source)."""

    name: str
    prompts: str
    label: str = "harmful"
    source: str | None = None
    limit: int | None = None
    targets: str = "affirmative"
    epsilon: str = "32/255"
    step_size: str = "1/255"
    steps: int = 200
    batch: int = 8
    universal: bool = True
    seed: int = 0
    adaptive: bool = False  # also made through each defended row's own steering (an attacker who knows the defence)


@dataclass(frozen=True)
class SetRecipe:
    """A column: records of `data` (a data spec or attack:<name>), filtered, optionally with one image attached to
    every record, sampled to `limit`, scored by `metric` under `judge`."""

    name: str
    data: str
    metric: str = "asr"
    label: str | None = None
    source: str | None = None
    behaviors: tuple[str, ...] = ()
    exclude_behaviors: tuple[str, ...] = ()
    image: str | None = None
    limit: int | None = None
    judge: str = "auto"
    toxicity_judge: str = "auto"

    @property
    def role(self) -> str:
        """attack (lower ASR/toxicity is the defence working) or utility (higher is better, except over-refusal)."""
        return "attack" if self.metric in ("asr", "toxic_rate") else "utility"


@dataclass(frozen=True)
class DefenceRecipe:
    """A row: no defence, a system prompt, Stage I with a preset, or Stage II with a preset from a Stage I row."""

    name: str
    kind: str
    preset: str = "workbench"
    text: str | None = None  # system-prompt: the prompt
    start: str | None = None  # stage2: the name of the Stage I row it refines
    settings: tuple[tuple[str, Any], ...] = ()  # stage2: Stage2Config fields given explicitly
    steering: tuple[tuple[str, Any], ...] = ()  # how the evaluation steers (None = as the vector records)

    @property
    def seeded(self) -> bool:
        """Stage II samples: it runs once per seed; every other row is deterministic (greedy) and runs once."""
        return self.kind == "stage2"


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    train: str
    seeds: tuple[int, ...]
    sets: tuple[SetRecipe, ...]
    defences: tuple[DefenceRecipe, ...]
    attacks: tuple[AttackRecipe, ...] = ()
    max_new_tokens: int = 24
    limit: int | None = None  # the default per-set record limit
    judge: str = "auto"  # the default ASR judge of every set (and the astra preset's α sweep)
    path: str = field(default="", compare=False)
    text: str = field(default="", compare=False)  # the recipe as run (variables filled in), saved as recipe.toml


def _take(table: dict, cls: type, where: str, **extra: Any) -> Any:
    """`cls` from a TOML table: unknown keys, missing required keys and wrong types are errors naming `where`."""
    own = ("path", "text") if cls is Recipe else ()  # set by load_recipe, not by the file
    known = {f.name: f for f in fields(cls) if f.name not in own}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    values = {**table, **extra}
    for name, spec in known.items():
        if name not in values and spec.default is spec.default_factory:  # both MISSING: required
            raise RecipeError(f"{where}: missing {name}")
        if name in values and isinstance(values[name], list):
            values[name] = tuple(values[name])
    for key in ("limit", "steps", "batch", "max_new_tokens"):
        if key in values and values[key] is not None and (not isinstance(values[key], int) or values[key] < 1):
            raise RecipeError(f"{where}: {key} must be a whole number of at least 1, got {values[key]!r}")
    return cls(**values)


def _check_set(entry: SetRecipe, attacks: set[str], where: str) -> None:
    if entry.metric not in METRICS:
        raise RecipeError(f"{where}: metric {entry.metric!r} is not one of {', '.join(METRICS)}")
    if entry.data.startswith("attack:") and entry.data[7:] not in attacks:
        raise RecipeError(f"{where}: {entry.data} names no [[attacks]] entry (have: "
                          f"{', '.join(sorted(attacks)) or 'none'})")
    if entry.label not in (None, "harmful", "benign"):
        raise RecipeError(f"{where}: label must be harmful or benign, got {entry.label!r}")
    if entry.judge.split(":")[0] not in (*JUDGES, "auto"):
        raise RecipeError(f"{where}: unknown judge {entry.judge!r}; use auto or one of {', '.join(JUDGES)}")
    if entry.toxicity_judge not in TOXICITY_JUDGES:
        raise RecipeError(f"{where}: toxicity_judge must be one of {', '.join(TOXICITY_JUDGES)}")
    if entry.image is not None and entry.image not in IMAGES and not Path(entry.image).is_file():
        raise RecipeError(f"{where}: image {entry.image!r} is neither {', '.join(IMAGES)} nor a file")


def _check_defence(entry: DefenceRecipe, stage1_rows: set[str], where: str) -> None:
    if entry.kind not in DEFENCE_KINDS:
        raise RecipeError(f"{where}: kind {entry.kind!r} is not one of {', '.join(DEFENCE_KINDS)}")
    if entry.kind == "system-prompt" and not (entry.text or "").strip():
        raise RecipeError(f"{where}: a system-prompt defence needs text")
    if entry.kind == "stage1" and entry.preset not in STAGE1_PRESETS:
        raise RecipeError(f"{where}: Stage I preset {entry.preset!r} is not one of {', '.join(STAGE1_PRESETS)}")
    if entry.kind == "stage2":
        if entry.preset not in STAGE2_PRESETS:
            raise RecipeError(f"{where}: Stage II preset {entry.preset!r} is not one of {', '.join(STAGE2_PRESETS)}")
        if entry.start not in stage1_rows:
            raise RecipeError(f"{where}: start must name a stage1 defence listed before it (have: "
                              f"{', '.join(sorted(stage1_rows)) or 'none'})")
        config_fields = {f.name for f in fields(Stage2Config)}
        unknown = sorted(k for k, _ in entry.settings if k not in config_fields)
        if unknown:
            raise RecipeError(f"{where}: unknown Stage II setting(s) {', '.join(unknown)}")
    unknown = sorted(k for k, _ in entry.steering if k not in STEERING_KEYS)
    if unknown:
        raise RecipeError(f"{where}: steering takes {', '.join(STEERING_KEYS)}; unknown: {', '.join(unknown)}")


VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def fill_variables(text: str, variables: Mapping[str, str], where: str) -> str:
    """`${name}` and `${name:-default}` replaced by `variables` (paths and sizes given with --var name=VALUE); a
    variable with no value and no default, or a given one the recipe does not use, is an error."""
    missing = sorted({m.group(1) for m in VARIABLE.finditer(text) if m.group(1) not in variables
                      and m.group(2) is None})
    if missing:
        raise RecipeError(f"{where} needs " + " ".join(f"--var {name}=VALUE" for name in missing)
                          + " (see the comments at its top)")
    unused = sorted(set(variables) - {m.group(1) for m in VARIABLE.finditer(text)})
    if unused:
        raise RecipeError(f"{where} has no variable {', '.join(unused)}")
    return VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(2) or ""), text)


def load_recipe(path: str | Path, variables: Mapping[str, str] | None = None) -> Recipe:
    """The recipe in `path` with `variables` filled in, checked before anything loads or runs."""
    file = Path(path)
    if not file.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    text = fill_variables(file.read_text(encoding="utf-8"), variables or {}, file.name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{file.name}: not valid TOML ({error})") from None
    where = file.name
    attacks = tuple(_take(t, AttackRecipe, f"{where} [[attacks]] {i + 1}")
                    for i, t in enumerate(data.pop("attacks", [])))
    for attack in attacks:
        try:
            parse_epsilon(attack.epsilon)
            parse_epsilon(attack.step_size)
        except ValueError as error:
            raise RecipeError(f"{where} [[attacks]] {attack.name}: {error}") from None
    sets = tuple(_take(t, SetRecipe, f"{where} [[sets]] {i + 1}") for i, t in enumerate(data.pop("sets", [])))
    defences = []
    for index, table in enumerate(data.pop("defences", [])):
        table = dict(table)
        for key in ("settings", "steering"):
            if not isinstance(table.get(key, {}), dict):
                raise RecipeError(f"{where} [[defences]] {index + 1}: {key} must be a table (key = value)")
            table[key] = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                      for k, v in table.get(key, {}).items()))
        defences.append(_take(table, DefenceRecipe, f"{where} [[defences]] {index + 1}"))
    if not sets or not defences:
        raise RecipeError(f"{where}: a recipe needs at least one [[sets]] and one [[defences]] entry")
    recipe = _take(data, Recipe, where, attacks=attacks, sets=sets, defences=tuple(defences), path=str(file))
    recipe = Recipe(**{**recipe.__dict__, "text": text})
    if not recipe.seeds or not all(isinstance(s, int) for s in recipe.seeds):
        raise RecipeError(f"{where}: seeds must be a list of whole numbers, e.g. [0, 1, 2]")
    for kind, names in (("attacks", [a.name for a in attacks]), ("sets", [s.name for s in sets]),
                        ("defences", [d.name for d in defences])):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise RecipeError(f"{where}: [[{kind}]] names must be distinct; repeated: {', '.join(repeated)}")
    for entry in sets:
        _check_set(entry, {a.name for a in attacks}, f"{where} [[sets]] {entry.name}")
    stage1_rows: set[str] = set()
    for entry in defences:
        _check_defence(entry, stage1_rows, f"{where} [[defences]] {entry.name}")
        if entry.kind == "stage1":
            stage1_rows.add(entry.name)
    if not any(d.kind == "none" for d in defences):
        raise RecipeError(f"{where}: list a defence of kind none: every row is compared with it")
    return recipe
