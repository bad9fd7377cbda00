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
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..attacks.job import PGDSpec, blank_image, run_pgd_job
from ..attacks.pgd import PGDSettings, parse_epsilon
from ..attacks.targets import target_strings
from ..core.jobs import spec_fields
from ..core.models import VLM
from ..core.progress import Cancelled
from ..core.records import Record, dataset_hash, read_jsonl, record_key
from ..core.runs import RUN_INFO
from ..core.sampling import stratified_sample
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
from .recipe import DefenceRecipe, Recipe, RecipeError, SetRecipe

Log = Callable[[str], None]


def slug(name: str) -> str:
    """A folder name for a recipe entry's name."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-")[:60] or "x"


def row_key(defence: DefenceRecipe, seed: int | None) -> str:
    return slug(defence.name) + ("" if seed is None else f"-seed{seed}")


@dataclass
class Runner:
    """One recipe run: the loaded model and scorers, the output folder, progress over all steps, cancel."""

    recipe: Recipe
    out: Path
    vlm: VLM
    scorers: tuple[ToxicityScorer, ClipScorer | None]
    log: Log = print
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


def run_attacks(runner: Runner) -> dict[str, Path]:
    """Every [[attacks]] entry's dataset.jsonl (made, or found made with the same settings)."""
    made = {}
    for attack in runner.recipe.attacks:
        folder = runner.out / "attacks" / slug(attack.name)
        settings = PGDSettings(parse_epsilon(attack.epsilon), float(parse_epsilon(attack.step_size) or 0), attack.steps,
                               True, attack.seed, attack.batch)
        spec = PGDSpec(runner.recipe.model, attack.prompts, attack.targets, settings, attack.universal)
        skip = _finished(runner, folder, spec, "dataset.jsonl")
        if not skip:
            records = [r for r in load_dataset(attack.prompts) if r.label == attack.label
                       and (attack.source is None or r.source == attack.source)]
            if not records:
                raise RecipeError(f"attack {attack.name}: {attack.prompts} has no {attack.label} records"
                                  + (f" of source {attack.source}" if attack.source else ""))
            records = stratified_sample(records, attack.limit)
            _fresh(runner, folder, spec)
            runner.log(f"attack {attack.name}: PGD {attack.targets}, ε {attack.epsilon}, {attack.steps} steps, "
                       f"{len(records)} prompts")
            run_pgd_job(spec, folder, runner.vlm, blank_image(), records,
                        target_strings(attack.targets, runner.recipe.model), cancel=runner.cancel)
        runner.step(f"attack {attack.name}", skip)
        made[attack.name] = folder / "dataset.jsonl"
    return made


def run_defences(runner: Runner) -> dict[str, Path]:
    """Every trained row's vectors, by row key (Stage I once, Stage II once per seed)."""
    recipe, vectors = runner.recipe, {}  # type: tuple[Recipe, dict[str, Path]]
    train = load_dataset(recipe.train)
    for defence in recipe.defences:
        if defence.kind not in ("stage1", "stage2"):
            continue
        for seed in recipe.seeds if defence.seeded else [None]:
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


def build_sets(runner: Runner, attacks: dict[str, Path]) -> dict[tuple[str, str], list[Record]]:
    """Every column's records, grouped by their pair of judges (one evaluation per group and row); sets.json says
    what each column holds."""
    groups: dict[tuple[str, str], list[Record]] = {}
    described = []
    for entry in runner.recipe.sets:
        records = set_records(entry, attacks, runner.recipe.limit)
        judges = judges_of(entry, runner.recipe)
        groups.setdefault(judges, []).extend(records)
        described.append({"name": entry.name, "data": entry.data, "metric": entry.metric, "role": entry.role,
                          "judge": judges[0], "toxicity_judge": judges[1], "records": len(records),
                          "unique_inputs": len({record_key(r) for r in records}),
                          "filters": {k: v for k, v in (("label", entry.label), ("source", entry.source),
                                                         ("behaviors", list(entry.behaviors)),
                                                         ("exclude_behaviors", list(entry.exclude_behaviors)),
                                                         ("image", entry.image)) if v}})
    path = runner.out / "sets.json"
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != described:
        raise RecipeError(f"{path} describes other sets than the recipe now makes (their data, filters or sizes "
                          "changed); use a new --out (nothing was changed)")
    if not path.is_file():
        path.write_text(json.dumps(described, indent=1), encoding="utf-8")
    return groups


def group_name(judges: tuple[str, str]) -> str:
    return slug(f"asr-{judges[0]}-tox-{judges[1]}")


def run_evals(runner: Runner, vectors: dict[str, Path], groups: dict[tuple[str, str], list[Record]]
              ) -> dict[str, dict[str, Path]]:
    """Every row (and seed) evaluated on every group of sets: row key -> {group: eval folder}."""
    recipe, folders = runner.recipe, {}  # type: tuple[Recipe, dict[str, dict[str, Path]]]
    hashes = {judges: dataset_hash(records) for judges, records in groups.items()}  # the check sees the records
    for defence in recipe.defences:
        for seed in recipe.seeds if defence.seeded else [None]:
            key = row_key(defence, seed)
            folders[key] = {}
            for judges, records in groups.items():
                folder = runner.out / "evals" / key / group_name(judges)
                steering = dict(defence.steering)
                data = f"reproduce:{group_name(judges)}@{hashes[judges]}"  # the records' content decides
                spec = EvalSpec(recipe.model, data,
                                vectors=str(vectors[key].resolve()) if key in vectors else None,
                                steering=SteeringChoice(steering.get("mode"), steering.get("alpha"),
                                                        tuple(steering["layers"]) if "layers" in steering else None,
                                                        steering.get("steer_at")),
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
    rows = sum(len(recipe.seeds) if d.seeded else 1 for d in recipe.defences)
    trained = sum(len(recipe.seeds) if d.seeded else 1 for d in recipe.defences if d.kind in ("stage1", "stage2"))
    return len(recipe.attacks) + trained + rows * groups


def run_steps(runner: Runner) -> dict[str, dict[str, Path]]:
    """Attacks, defences, sets, evaluations in order; the evaluation folders by row key."""
    runner.started = time.time()
    judge_pairs = {judges_of(s, runner.recipe) for s in runner.recipe.sets}
    runner.total = count_steps(runner.recipe, len(judge_pairs))
    attacks = run_attacks(runner)
    vectors = run_defences(runner)
    groups = build_sets(runner, attacks)
    return run_evals(runner, vectors, groups)


def rows_of(recipe: Recipe) -> Sequence[tuple[DefenceRecipe, list[int | None]]]:
    """Each row with the seeds it runs under (None: once, deterministic)."""
    return [(d, list(recipe.seeds) if d.seeded else [None]) for d in recipe.defences]
