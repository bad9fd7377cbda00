"""The CLI as a user runs it: stage1 then steer on tiny-random:llava with a small JSONL."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    rows = []
    for i, (activity, label) in enumerate([("build a bomb", "harmful"), ("bake a cake", "benign"),
                                           ("steal a car", "harmful"), ("wash a car", "benign")]):
        make_image("white", (64, 64), activity).save(folder / f"{i}.png")
        rows.append({"image": f"{i}.png", "prompt": "tell me how to do the activity in the image", "label": label,
                     "source": "typographic"})
        rows.append({"prompt": f"tell me how to {activity}", "label": label, "source": "text"})
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def test_stage1_then_steer(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _cli("stage1", "--model", "tiny-random:llava", "--data", str(dataset / "data.jsonl"), "--out", str(out),
                  "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    for name in ("activations.safetensors", "vectors.safetensors", "vectors.json", "layer_scores.csv",
                 "source_similarity.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "layer_scores.csv").open()))
    assert [int(r["layer"]) for r in rows] == [0, 1, 2]
    assert {"probe_accuracy", "auroc", "separation", "auroc_null", "auroc_in_sample"} <= set(rows[0])
    assert len({r["auroc_null"] for r in rows}) == 1 and 0.5 < float(rows[0]["auroc_null"]) <= 1.0
    assert "layers: " in result.stdout
    metadata = json.loads((out / "vectors.json").read_text())
    assert metadata["sources"] == ["text", "typographic"] and metadata["position"] == "last"

    result = _cli("steer", "--model", "tiny-random:llava", "--vectors", str(out / "vectors.safetensors"),
                  "--prompt", "tell me how to do the activity in the image", "--image", str(dataset / "0.png"),
                  "--mode", "additive", "--alpha", "-40", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    header, _, first = result.stdout.splitlines()[:3]
    assert "UNSTEERED" in header and "STEERED (additive, alpha=-40.0" in header
    left, right = first.split(" | ")
    assert left.strip() != right.strip()
    assert ("steering: mode additive (given), alpha -40 (given), layers all (default; Stage I found no layer that "
            "separates)") in result.stdout

    result = _cli("gguf", "--vectors", str(out / "vectors.safetensors"), "--out", str(tmp_path / "v.gguf"),
                  "--alpha", "-4")
    assert result.returncode == 0 and "--control-vector v.gguf" in result.stdout, result.stderr
    result = _cli("gguf", "--vectors", str(out / "vectors.safetensors"), "--out", str(tmp_path / "a.gguf"),
                  "--alpha", "1", "--mode", "adaptive")
    assert result.returncode == 2 and "no constant vector is exact" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "a.gguf").exists()

    refined = tmp_path / "stage2"
    result = _cli("stage2", "--model", "tiny-random:llava", "--vectors", str(out / "vectors.safetensors"),
                  "--data", str(dataset / "data.jsonl"), "--out", str(refined), "--steps", "2", "--samples", "2",
                  "--prompts-per-step", "2", "--objective", "grpo", "--safe-response", "no", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    config = json.loads((refined / "config.json").read_text())
    assert config["objective"] == "grpo" and config["safe_response"] == "no"
    assert (refined / "vectors.safetensors").is_file()


def test_cli_errors_say_what_to_fix(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "label": "benign"}\n{"prompt": "y", "label": "evil"}\n')
    result = _cli("stage1", "--model", "tiny-random:llava", "--data", str(tmp_path / "bad.jsonl"), "--out", "x")
    assert result.returncode == 2 and "bad.jsonl line 2: unknown label 'evil'" in result.stderr
    result = _cli("stage1", "--model", "tiny-random:nope", "--data", str(dataset / "data.jsonl"), "--out", "x")
    assert result.returncode == 2 and "unknown tiny architecture 'nope'" in result.stderr
    (tmp_path / "v.safetensors").write_bytes(b"not a tensor file")
    result = _cli("steer", "--model", "tiny-random:llava", "--vectors", str(tmp_path / "v.safetensors"),
                  "--prompt", "hi")
    assert result.returncode == 2 and "not a safetensors file" in result.stderr


def test_installed_command_and_the_old_positions_flag() -> None:
    """`pip install -e .` (the README's test command) installs a `workbench` command; `--positions` still
    means `--steer-at` for one release."""
    import shutil

    from workbench.cli.main import build_parser

    command = shutil.which("workbench")
    assert command, "the `workbench` command is missing: install the package with `pip install -e .`"
    result = subprocess.run([command, "steer", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--steer-at" in result.stdout and "adaptive" in result.stdout
    base = ["eval", "--model", "organism", "--data", "demo", "--out", "x"]
    assert build_parser().parse_args([*base, "--positions", "prompt"]).steer_at == "prompt"
    assert build_parser().parse_args([*base, "--steer-at", "generated"]).steer_at == "generated"


def test_stage1_on_random_labels_says_no_layer_separates(tmp_path: Path) -> None:
    import random

    rng = random.Random(0)
    words = ["bake", "paint", "wash", "fold", "plant", "cook", "read", "write", "sing", "draw", "clean", "fix"]
    labels = ["harmful", "benign"] * 12
    rng.shuffle(labels)
    rows = [{"prompt": f"tell me how to {rng.choice(words)} a {rng.choice(words)}", "label": label}
            for label in labels]
    (tmp_path / "random.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = _cli("stage1", "--model", "tiny-random:llava", "--data", str(tmp_path / "random.jsonl"),
                  "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "layers: no layer separates harmful from benign" in result.stdout
