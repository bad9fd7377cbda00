"""The CLI and the app run the same job pipelines: one spec through each writes the same run.json (ids, timestamps
and file paths aside) and the same results. A check or a default added to one shell only shows up here."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from workbench.app.backend import Workbench
from workbench.app.jobs import create_stage2, run_comparison, run_evaluation, run_stage2
from workbench.cli.main import main
from workbench.stage2.loop import Stage2Config
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
         str(both["cli_stage1"] / "vectors.safetensors"), "--mode", "adaptive", "--alpha", "1", "--steer-at", "all",
         "--limit", "12", "--out", str(out))
    records, label = wb.dataset("organism:test")
    steering = wb.steering(both["app_stage1"], "adaptive", 1.0, None)
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
    config = Stage2Config(steps=1, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=8)
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
    assert "toxic answers" in table["rows"]["no defence"]["cells"]["organism:test"]
    app_runs = wb.runs.list("compare")
    assert len(app_runs) == 1 and _info(out) == _info(wb.runs.path(app_runs[0]))
