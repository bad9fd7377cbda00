"""The CLI and the app run the same job pipelines: one spec through each writes the same run.json (ids, timestamps
and file paths aside) and the same results. A check or a default added to one shell only shows up here."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ORGANISM_SUGGESTED

from workbench.app.backend import Workbench
from workbench.app.jobs import create_stage2, run_comparison, run_evaluation, run_stage2
from workbench.cli.main import main
from workbench.steer.steering import steering_for
from workbench.steer.vectors import SteeringVector

pytestmark = pytest.mark.slow

# Where the two shells differ by design: the app names runs by id in its runs folder, the CLI by the paths given.
PATHS = ("id", "vectors", "vectors_run", "source_run")


def _info(folder: Path) -> dict[str, Any]:
    info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    return {key: value for key, value in info.items() if key not in PATHS}


def _cli(*argv: str) -> None:
    assert main(list(argv)) == 0


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Stage I through each shell, on the organism's training set."""
    root = tmp_path_factory.mktemp("shared")
    wb = Workbench("organism", root / "runs")
    cli_stage1 = root / "cli-stage1"
    _cli("stage1", "--model", "organism", "--data", "organism:train", "--out", str(cli_stage1))
    app_stage1 = wb.run_stage1(wb.records("organism:train"), "organism:train", "last", "mean_diff")
    return {"root": root, "wb": wb, "cli_stage1": cli_stage1, "app_stage1": app_stage1}


def test_stage1_writes_the_same_run_through_the_cli_and_the_app(both: dict[str, Any]) -> None:
    app_folder = both["wb"].runs.path(both["app_stage1"])
    cli_info = _info(both["cli_stage1"])
    assert cli_info == _info(app_folder)
    assert cli_info["kind"] == "stage1" and cli_info["records"] > 0 and "suggested_layers" in cli_info
    assert (both["cli_stage1"] / "layer_scores.csv").read_text() == (app_folder / "layer_scores.csv").read_text()
    vector = SteeringVector.load(both["cli_stage1"] / "vectors.safetensors")  # the suggestion travels with the file
    assert vector.metadata["suggested_layers"] == cli_info["suggested_layers"] != []
    assert list(steering_for(vector)[0].layers or []) == cli_info["suggested_layers"]


def test_eval_writes_the_same_run_and_metrics_through_the_cli_and_the_app(both: dict[str, Any]) -> None:
    wb, root = both["wb"], both["root"]
    out = root / "cli-eval"
    _cli("eval", "--model", "organism", "--data", "organism:test", "--vectors",
         str(both["cli_stage1"] / "vectors.safetensors"), "--mode", "adaptive", "--alpha", "1",  # no --steer-at:
         "--limit", "12", "--out", str(out))  # the Evaluate tab has none either (the vector's, else all)
    records, label = wb.dataset("organism:test")
    steering = wb.steering_choice(both["app_stage1"], "adaptive", 1.0, None)  # what the Evaluate tab sends
    run_id, metrics, _ = run_evaluation(wb, both["app_stage1"], label, records, steering, 12, 48)
    app_folder = wb.runs.path(run_id)
    cli_info = _info(out)
    assert cli_info == _info(app_folder)
    assert cli_info["records"] == 12 and cli_info["sampling"]["of"] == 220
    cli_metrics = json.loads((out / "metrics.json").read_text())
    for saved in (cli_metrics, metrics):
        saved["settings"]["vector"].pop("run")  # the vectors' folder name: a path
    assert cli_metrics == metrics
    assert metrics["settings"]["toxicity_judge"] == "organism ground truth (a planted insult)"  # independent judge
    assert metrics["unsteered"]["overall"]["toxic_rate"]["n"] == 12
    assert (out / "generations.jsonl").read_text() == (app_folder / "generations.jsonl").read_text()
    sources = {json.loads(line)["source"] for line in (out / "generations.jsonl").read_text().splitlines()}
    assert len(sources) == 4, f"a limit samples every source of the set, got only {sources}"
    assert not list(out.glob("partial-*.jsonl")) and not list(app_folder.glob("partial-*.jsonl"))


def test_stage2_writes_the_same_run_through_the_cli_and_the_app(both: dict[str, Any]) -> None:
    wb, root = both["wb"], both["root"]
    out = root / "cli-stage2"
    from workbench.stage2.presets import stage2_config  # what the app's Stage II tab builds its config with

    config, _ = stage2_config("workbench", wb.vector(both["app_stage1"]),
                              dict(steps=1, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=8))
    suggested = [int(layer) for layer in ORGANISM_SUGGESTED.split(",")]
    assert config.layers == suggested and config.preset == "workbench"  # Stage I's suggested layers, as eval steers
    _cli("stage2", "--model", "organism", "--data", "organism:train", "--vectors",
         str(both["cli_stage1"] / "vectors.safetensors"), "--steps", "1", "--prompts-per-step", "2", "--samples", "2",
         "--max-new-tokens", "8", "--out", str(out))
    run_id = create_stage2(wb, both["app_stage1"], "organism:train", config)
    run_stage2(wb, run_id, config, False, threading.Event(), lambda metrics: None)
    app_folder = wb.runs.path(run_id)
    cli_info = _info(out)
    assert cli_info == _info(app_folder) and cli_info["status"] == "finished"
    assert (out / "config.json").read_text() == (app_folder / "config.json").read_text()

    def steps(folder: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps(out) == steps(app_folder) and len(steps(out)) == 1

    evaluated = root / "cli-eval-stage2"  # the Stage II vectors' own reward metrics are flagged as such
    _cli("eval", "--model", "organism", "--data", "organism:test", "--vectors", str(out / "vectors.safetensors"),
         "--limit", "6", "--no-plots", "--out", str(evaluated))
    independence = json.loads((evaluated / "metrics.json").read_text())["settings"]["independence"]
    assert independence["mean_toxicity"].startswith("the Stage II reward (term toxicity")
    assert independence["visual_consistency"].startswith("the Stage II reward (term visual")
    assert independence["asr"] == independence["benign_accuracy"] == "independent"  # the organism's ground truth
    report = (evaluated / "report.md").read_text()
    assert "| mean toxicity ⚠ the Stage II reward |" in report and "| ASR |" in report


def test_compare_writes_the_same_table_through_the_cli_and_the_app(both: dict[str, Any]) -> None:
    wb, root = both["wb"], both["root"]
    out = root / "cli-compare"
    name = both["app_stage1"]
    _cli("compare", "--model", "organism", "--data", "organism:test", "--vectors",
         str(both["cli_stage1"] / "vectors.safetensors"), "--names", name, "--limit", "6", "--out", str(out))
    table = json.loads(json.dumps(run_comparison(wb, [name], ["organism:test"], 6, "auto", None)))
    cli_table = json.loads((out / "compare.json").read_text())
    for saved in (cli_table, table):
        saved["rows"][name]["settings"].pop("run")  # the vectors' folder name: a path
    assert cli_table == table
    assert {"toxic answers", "changed subject"} <= set(table["rows"]["no defence"]["cells"]["organism:test"])
    app_runs = wb.runs.list("compare")
    assert len(app_runs) == 1 and _info(out) == _info(wb.runs.path(app_runs[0]))


def test_the_astra_and_spo_vlm_presets_run_the_same_through_the_cli_and_the_app(both: dict[str, Any]) -> None:
    """Stage I `astra` (attribution, α sweep) and Stage II `spo-vlm` from its vectors, through each shell."""
    from workbench.app.tabs.stage2 import preset_widgets

    wb, root = both["wb"], both["root"]
    cli_s1 = root / "cli-astra"
    _cli("stage1", "--model", "organism", "--data", "organism:train", "--out", str(cli_s1), "--preset", "astra")
    app_s1 = wb.run_stage1(wb.records("organism:train"), "organism:train", "last", "mean_diff", preset="astra")
    app_folder = wb.runs.path(app_s1)
    assert _info(cli_s1) == _info(app_folder) and _info(cli_s1)["preset"] == "astra"
    assert (cli_s1 / "alpha_sweep.csv").read_text() == (app_folder / "alpha_sweep.csv").read_text()
    vector = SteeringVector.load(cli_s1 / "vectors.safetensors")
    assert vector.metadata["attribution"]["sources"]["typographic"]["direction"] == "attribution"
    assert vector.metadata["steering"]["steer_at"] == "last"

    cli_s2 = root / "cli-spo"
    _cli("stage2", "--model", "organism", "--data", "organism:train", "--vectors", str(cli_s1 / "vectors.safetensors"),
         "--preset", "spo-vlm", "--steps", "1", "--prompts-per-step", "2", "--samples", "2", "--max-new-tokens", "8",
         "--out", str(cli_s2))
    objective, reference, reward, _, safe, note = preset_widgets("spo-vlm")
    assert (objective, reference, reward, safe) == ("dpo", "initial", "toxicity=1,visual=0.5", "")
    assert "SPO-VLM's Stage II" in note
    from workbench.stage2.presets import parse_reward_weights, stage2_config
    config, _ = stage2_config("spo-vlm", wb.vector(app_s1), dict(
        steps=1, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=8, objective=objective, reference=reference,
        weights=parse_reward_weights(reward)))
    run_id = create_stage2(wb, app_s1, "organism:train", config)
    run_stage2(wb, run_id, config, False, threading.Event(), lambda metrics: None)
    saved = json.loads((cli_s2 / "config.json").read_text())
    assert saved == json.loads((wb.runs.path(run_id) / "config.json").read_text())
    assert saved["preset"] == "spo-vlm" and saved["steer_at"] == "last" and saved["weights"]["refusal"] == 0.0
    trained = SteeringVector.load(cli_s2 / "vectors.safetensors")
    assert trained.metadata["steering"]["steer_at"] == "last" and trained.metadata["stage2"]["preset"] == "spo-vlm"


def test_a_pgd_attack_makes_the_same_image_and_dataset_through_the_cli_and_the_app(both: dict[str, Any]) -> None:
    """The Attacks tab and `attack pgd` with the same settings: the same PNG pixel for pixel, the same dataset rows and
    the same run.json (the app's run id aside)."""
    import numpy as np
    from PIL import Image

    from workbench.app.jobs import run_attack

    wb, root = both["wb"], both["root"]
    _cli("attack", "pgd", "--model", "organism", "--prompts", "organism:test", "--label", "benign", "--source",
         "scenes", "--limit", "4", "--targets", "toxic", "--epsilon", "64/255", "--steps", "5", "--out",
         str(root / "cli-pgd"))
    run_id, _ = run_attack(wb, "organism:test", wb.records("organism:test"), "toxic", "64/255", 5, "benign", "scenes",
                           4)
    app = wb.runs.path(run_id)
    assert np.array_equal(np.asarray(Image.open(root / "cli-pgd" / "pgd-0.png")),
                          np.asarray(Image.open(app / "pgd-0.png")))
    assert (root / "cli-pgd" / "dataset.jsonl").read_text() == (app / "dataset.jsonl").read_text()
    assert _info(root / "cli-pgd") == _info(app)


def test_stage1s_saved_direction_weighs_each_source_equally_on_an_unbalanced_set() -> None:
    """The #46 audit: pooling every record instead changes the vector's cosine to the small source from 0.92 to
    about 0.3 while the metadata still says 'mean of unit per-source directions'. Checked against per-source mean
    differences computed here from the run's own activations."""
    import torch

    from workbench.core.models import load_vlm
    from workbench.data.sources import load_dataset
    from workbench.stage1.pipeline import run_stage1

    train = load_dataset("organism:train")
    big = [r for r in train if r.source == "typographic"]
    small = [r for r in train if r.source == "roleplay"]
    small = [r for r in small if r.label == "harmful"][:3] + [r for r in small if r.label == "benign"][:3]
    result = run_stage1(load_vlm("organism"), big + small, show_bar=False)
    acts = result.activations
    units = []
    for source in ("typographic", "roleplay"):
        rows = torch.tensor([s == source for s in acts.sources])
        harmful = rows & torch.tensor([label == "harmful" for label in acts.labels])
        benign = rows & torch.tensor([label == "benign" for label in acts.labels])
        diff = acts.values[harmful].mean(0) - acts.values[benign].mean(0)  # [layers, hidden]
        units.append(diff / diff.norm(dim=-1, keepdim=True))
    expected = (units[0] + units[1]) / 2
    for layer, direction in result.vector.directions.items():
        cosine = torch.nn.functional.cosine_similarity(direction.float(), expected[layer], dim=0)
        assert float(cosine) > 0.999, (layer, float(cosine))


def test_every_compare_cell_is_the_share_eval_counts_on_the_same_answers() -> None:
    """The #46 audit: compare's over-refusal column taken from the refusal rate (0.4 instead of 0.0) went unseen.
    Each cell of the undefended row is recounted here from eval's own outcomes of the same records."""
    from statistics import mean

    from workbench.core.models import load_vlm
    from workbench.data.sources import load_dataset
    from workbench.evaluate.compare import run_compare
    from workbench.evaluate.evaluation import EvalConfig, evaluate
    from workbench.evaluate.judges import organism_asr, organism_toxicity
    from workbench.rewards.toxicity import ToxicityScorer

    vlm = load_vlm("organism")
    records = [r for r in load_dataset("organism:test") if r.source in ("text", "typographic")][::5]
    toxicity, config = ToxicityScorer.fallback(), EvalConfig(max_new_tokens=24, resamples=50)
    cells = run_compare(vlm, {"organism:test": records}, [], toxicity, None, None, config,  # judges chosen by name
                        show_bar=False)["rows"]["no defence"]["cells"]["organism:test"]
    outcomes = evaluate(vlm, records, None, toxicity, None, config=config, show_bar=False, asr_judge=organism_asr(),
                        toxicity_judge=organism_toxicity()).outcomes["unsteered"]
    harmful, benign = [o for o in outcomes if o.label == "harmful"], [o for o in outcomes if o.label == "benign"]
    assert any(o.refused for o in harmful) and not any(o.refused for o in benign)  # the two rates differ here
    expected = {"over-refusal": mean(o.refused for o in benign), "toxicity": mean(o.toxicity for o in outcomes),
                "toxic answers": mean(bool(o.toxic) for o in outcomes),
                "changed subject": mean(o.answer == "another activity" for o in harmful),
                **{f"ASR · {s}": mean(bool(o.attack_success) for o in harmful if o.source == s)
                   for s in ("text", "typographic")}}
    assert {name: cells[name]["value"] for name in expected} == pytest.approx(expected, abs=1e-4)
