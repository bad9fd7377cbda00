"""Run a recipe's steps through the job pipelines, each in its own run folder under the output folder:

    attacks/<attack>/          the PGD job (images, attack.json, dataset.jsonl)
    defences/<row>[-seed<s>]/  the Stage I job (with its preset's α sweep) or the Stage II job
    evals/<row>[-seed<s>]/<judges>/   the eval job on every set scored by one pair of judges

Each step folder gets step.json (what the recipe asked, paths inside the output folder written as <out>/...) before
it runs. A step whose step.json matches and whose run.json says it finished is skipped (so --resume continues after
a kill, also in a moved folder); one asked with other settings stops the run with the fields that differ (nothing is
overwritten); an interrupted evaluation or Stage II continues from its partial file or checkpoint; an interrupted
attack or Stage I starts again.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..attacks.job import PGDSpec, blank_image, pick_prompts, run_pgd_job
from ..attacks.pgd import PGDSettings, parse_epsilon
from ..attacks.targets import target_strings
from ..core.jobs import spec_fields
from ..core.models import VLM
from ..core.progress import Cancelled, ProgressFn
from ..core.records import dataset_hash
from ..core.runs import RUN_INFO
from ..data.sources import load_dataset
from ..evaluate.alpha import run_stage1_preset_job
from ..evaluate.job import EvalSpec, SteeringChoice, run_eval_job
from ..evaluate.judges import choose_judge
from ..rewards.toxicity import ToxicityScorer
from ..rewards.visual import ClipScorer
from ..stage1.job import Stage1Spec
from ..stage2.job import Stage2Spec, run_stage2_job
from ..stage2.presets import stage2_config
from ..steer.vectors import SteeringVector
from .recipe import AttackRecipe, DefenceRecipe, Recipe, RecipeError
from .sets import group_name, group_sets, judges_of, save_sets, slug

Log = Callable[[str], None]


def row_key(defence: DefenceRecipe, seed: int | None) -> str:
    return slug(defence.name) + ("" if seed is None else f"-seed{seed}")


def steering_choice(defence: DefenceRecipe) -> SteeringChoice:
    """How the row steers its vectors: the recipe's overrides, the rest as the vectors record."""
    given = dict(defence.steering)
    layers = given.get("layers")
    return SteeringChoice(given.get("mode"), given.get("alpha"), tuple(layers) if layers else None,
                          given.get("steer_at"))


@dataclass
class Runner:
    """One recipe run: the loaded model and scorers, the output folder, progress over all steps, cancel."""

    recipe: Recipe
    out: Path
    vlm: VLM
    scorers: tuple[ToxicityScorer, ClipScorer | None]
    log: Log = print
    progress: ProgressFn | None = None  # (steps done, steps in all, the step) after each step, e.g. the app's bar
    cancel: threading.Event | None = None
    show_bar: bool = True
    total: int = 0
    done: int = 0
    started: float = 0.0

    def step(self, what: str, skipped: bool) -> None:
        """One line per step: its number, what it is, and an estimate of the rest from the steps run so far."""
        self.done += 1
        elapsed = time.time() - self.started
        left = elapsed / self.done * (self.total - self.done) / 60
        eta = "" if skipped else f", about {left:.0f} min left at this pace"
        self.log(f"[{self.done}/{self.total}] {what}" + (" (done before: skipped)" if skipped else "") + eta)
        if self.progress is not None:
            self.progress(self.done, self.total, what)
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled: the finished steps are kept; --resume (or the same recipe and folder) "
                            "continues")


STEP = "step.json"  # what the recipe asked of a step, paths inside the output folder written as <out>/...


def _portable(spec: Any, out: Path) -> dict[str, Any]:
    """The spec's fields with the output folder's path replaced, so a moved run folder still resumes."""
    return json.loads(json.dumps(spec_fields(spec)).replace(json.dumps(str(out.resolve()))[1:-1], "<out>"))


def _finished(runner: Runner, folder: Path, spec: Any, output: str, status: str | None = None) -> bool:
    """True when `folder` holds a finished run of exactly `spec` (its `output` file made, run.json's status `status`
    when given); False when there is none yet or it was interrupted (step.json is written before the step runs); a
    step recorded with other settings is an error naming the fields (nothing is overwritten)."""
    wanted = _portable(spec, runner.out)
    record = folder / STEP
    if record.is_file():
        asked = json.loads(record.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(wanted) | set(asked) if asked.get(k) != wanted.get(k))
        if changed:
            raise RecipeError(f"{folder} was made with other settings ({', '.join(changed)} differ): the recipe "
                              "changed since; use a new --out, or delete that folder to redo the step (nothing was "
                              "changed)")
        info = folder / RUN_INFO
        if info.is_file() and (folder / output).is_file():
            return status is None or json.loads(info.read_text(encoding="utf-8")).get("status") == status
    return False


def _record(runner: Runner, folder: Path, spec: Any) -> None:
    """step.json, before the step runs: what it was asked to make."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STEP).write_text(json.dumps(_portable(spec, runner.out), indent=1), encoding="utf-8")


def _fresh(runner: Runner, folder: Path, spec: Any) -> None:
    """An interrupted attack or Stage I leaves nothing to continue from: start its folder again."""
    if folder.exists():
        shutil.rmtree(folder)
    _record(runner, folder, spec)


def _make_attack(runner: Runner, attack: AttackRecipe, folder: Path, defence: DefenceRecipe | None = None,
                 vectors: Path | None = None) -> Path:
    """One PGD step (through `defence`'s steering with `vectors` when given): its dataset.jsonl."""
    settings = PGDSettings(parse_epsilon(attack.epsilon), float(parse_epsilon(attack.step_size) or 0), attack.steps,
                           True, attack.seed, attack.batch)
    spec = PGDSpec(runner.recipe.model, attack.prompts, attack.targets, settings, attack.universal,
                   vectors=str(vectors.resolve()) if vectors else None,
                   steering=defence.steering if defence is not None else ())
    skip = _finished(runner, folder, spec, "dataset.jsonl")
    if not skip:
        records = pick_prompts(load_dataset(attack.prompts), attack.label, attack.source, attack.limit,
                               f"attack {attack.name}: {attack.prompts}")
        steering = None
        if vectors is not None and defence is not None:
            steering, _ = steering_choice(defence).apply(SteeringVector.load(vectors))  # as the row is evaluated
        _fresh(runner, folder, spec)
        run_pgd_job(spec, folder, runner.vlm, blank_image(), records,
                    target_strings(attack.targets, runner.recipe.model), steering, cancel=runner.cancel)
    runner.step(f"attack {attack.name}" + (f" through {defence.name}" if defence else ""), skip)
    return folder / "dataset.jsonl"


def run_attacks(runner: Runner) -> dict[str, Path]:
    """Every [[attacks]] entry's dataset.jsonl against the undefended model (made, or found made alike)."""
    return {a.name: _make_attack(runner, a, runner.out / "attacks" / slug(a.name)) for a in runner.recipe.attacks}


def run_adaptive_attacks(runner: Runner, vectors: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """Row key -> {adaptive attack: its dataset.jsonl made through that row's steering} for every trained row."""
    made: dict[str, dict[str, Path]] = {}
    for defence, seeds in rows_of(runner.recipe):
        for seed in seeds:
            key = row_key(defence, seed)
            for attack in (a for a in runner.recipe.attacks if a.adaptive and key in vectors):
                folder = runner.out / "attacks" / f"{slug(attack.name)}--{key}"
                made.setdefault(key, {})[attack.name] = _make_attack(runner, attack, folder, defence, vectors[key])
    return made


def run_defences(runner: Runner) -> dict[str, Path]:
    """Every trained row's vectors, by row key (Stage I once, Stage II once per seed)."""
    recipe, vectors = runner.recipe, {}  # type: tuple[Recipe, dict[str, Path]]
    train = load_dataset(recipe.train)
    for defence, seeds in rows_of(recipe):
        if defence.kind not in ("stage1", "stage2"):
            continue
        for seed in seeds:
            key = row_key(defence, seed)
            folder = runner.out / "defences" / key
            if defence.kind == "stage1":
                spec1 = Stage1Spec(recipe.model, recipe.train, preset=defence.preset)
                skip = _finished(runner, folder, spec1, "vectors.safetensors")
                if not skip:
                    _fresh(runner, folder, spec1)
                    run_stage1_preset_job(spec1, folder, runner.vlm, train, choose_judge(recipe.judge, recipe.train),
                                          cancel=runner.cancel, show_bar=runner.show_bar)
            else:
                start = vectors[row_key(next(d for d in recipe.defences if d.name == defence.start), None)]
                config, _ = stage2_config(defence.preset, SteeringVector.load(start),
                                          {**dict(defence.settings), "seed": seed}, recipe.model)
                spec2 = Stage2Spec(recipe.model, recipe.train, str(start.resolve()), config)
                skip = _finished(runner, folder, spec2, "vectors.safetensors", "finished")
                if not skip:
                    resume = (folder / "checkpoint.safetensors").is_file() and (folder / STEP).is_file()
                    if not resume:
                        _fresh(runner, folder, spec2)
                    run_stage2_job(spec2, folder, runner.vlm, train, runner.scorers, resume, cancel=runner.cancel,
                                   show_bar=runner.show_bar)
            runner.step(f"{defence.kind} {defence.name}" + ("" if seed is None else f" seed {seed}"), skip)
            vectors[key] = folder / "vectors.safetensors"
    return vectors


def run_evals(runner: Runner, vectors: dict[str, Path], attacks: dict[str, Path],
              adaptive: dict[str, dict[str, Path]]) -> dict[str, dict[str, Path]]:
    """Every row (and seed) evaluated on every group of sets (a defended row on the adaptive attacks made through
    it): row key -> {group: eval folder}."""
    recipe, folders = runner.recipe, {}  # type: tuple[Recipe, dict[str, dict[str, Path]]]
    plain, described = group_sets(recipe, attacks)
    save_sets(runner.out, described)
    for defence, seeds in rows_of(recipe):
        for seed in seeds:
            key = row_key(defence, seed)
            groups = group_sets(recipe, {**attacks, **adaptive[key]})[0] if key in adaptive else plain
            hashes = {judges: dataset_hash(records) for judges, records in groups.items()}  # the check sees them
            folders[key] = {}
            for judges, records in groups.items():
                folder = runner.out / "evals" / key / group_name(judges)
                data = f"reproduce:{group_name(judges)}@{hashes[judges]}"  # the records' content decides
                spec = EvalSpec(recipe.model, data,
                                vectors=str(vectors[key].resolve()) if key in vectors else None,
                                steering=steering_choice(defence),
                                judge=judges[0], toxicity_judge=judges[1], max_new_tokens=recipe.max_new_tokens,
                                plots=False, system_prompt=defence.text if defence.kind == "system-prompt" else None,
                                baseline=key not in vectors)
                skip = _finished(runner, folder, spec, "generations.jsonl")
                if not skip:
                    resume = (folder / STEP).is_file() and any(folder.glob("partial-*.jsonl"))
                    _record(runner, folder, spec)
                    run_eval_job(spec, folder, runner.vlm, records, runner.scorers, resume, cancel=runner.cancel,
                                 show_bar=runner.show_bar)
                runner.step(f"evaluate {defence.name}" + ("" if seed is None else f" seed {seed}")
                            + f" ({len(records)} records, judges {judges[0]}/{judges[1]})", skip)
                folders[key][group_name(judges)] = folder
    return folders


def count_steps(recipe: Recipe, groups: int) -> int:
    rows = sum(len(seeds) for _, seeds in rows_of(recipe))
    trained = sum(len(seeds) for d, seeds in rows_of(recipe) if d.kind in ("stage1", "stage2"))
    return len(recipe.attacks) + trained * (1 + sum(a.adaptive for a in recipe.attacks)) + rows * groups


def run_steps(runner: Runner) -> dict[str, dict[str, Path]]:
    """Attacks, defences, adaptive attacks, evaluations in order; the evaluation folders by row key."""
    runner.started = time.time()
    runner.total = count_steps(runner.recipe, len({judges_of(s, runner.recipe) for s in runner.recipe.sets}))
    attacks = run_attacks(runner)
    vectors = run_defences(runner)
    adaptive = run_adaptive_attacks(runner, vectors)
    return run_evals(runner, vectors, attacks, adaptive)


def rows_of(recipe: Recipe) -> Sequence[tuple[DefenceRecipe, list[int | None]]]:
    """Each row with the seeds it runs under (None: once, deterministic)."""
    return [(d, list(recipe.seeds) if d.seeded else [None]) for d in recipe.defences]
