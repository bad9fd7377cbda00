"""Interrupted work: a Stage II run killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run ends; atomic writes leave the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.core.io import atomic_write, atomic_write_text
from workbench.steer.vectors import SteeringVector

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbench", *args]


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    rows = [{"prompt": f"how do i do bad thing {i}", "label": "harmful"} for i in range(4)]
    rows += [{"prompt": f"how do i do good thing {i}", "label": "benign"} for i in range(4)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    model = ["--model", "tiny-random:llava"]
    subprocess.run(_cli("stage1", *model, "--data", str(data), "--out", str(tmp_path / "s1")), env=_env(), cwd=ROOT,
                   check=True, capture_output=True)
    vectors = str(tmp_path / "s1" / "vectors.safetensors")
    settings = ["--data", str(data), "--vectors", vectors, "--steps", "30", "--samples", "2", "--prompts-per-step",
                "2", "--max-new-tokens", "4", "--clip", str(tmp_path / "no-clip")]

    killed = tmp_path / "killed"
    process = subprocess.Popen(_cli("stage2", *model, *settings, "--out", str(killed)), env=_env(), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 7):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "vectors.safetensors").exists()  # it did not finish
    from safetensors import safe_open

    with safe_open(str(killed / "checkpoint.safetensors"), framework="pt") as handle:  # not torn
        saved_step = int(handle.metadata()["step"])
    assert saved_step >= 5 and saved_step % 5 == 0
    json.loads((killed / "config.json").read_text())

    subprocess.run(_cli("stage2", *model, *settings, "--out", str(killed), "--resume"), env=_env(), cwd=ROOT,
                   check=True, capture_output=True)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 31))  # lines past the checkpoint were dropped and redone once

    straight = tmp_path / "straight"
    subprocess.run(_cli("stage2", *model, *settings, "--out", str(straight)), env=_env(), cwd=ROOT, check=True,
                   capture_output=True)
    resumed, reference = (SteeringVector.load(p / "vectors.safetensors") for p in (killed, straight))
    for layer in reference.layers:
        assert torch.allclose(resumed.directions[layer], reference.directions[layer], atol=1e-5)
        assert abs(resumed.scale(layer) - reference.scale(layer)) < 1e-5


def test_an_interrupted_write_leaves_the_old_file_and_no_debris(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, '{"ok": 1}')

    def torn(temp: str) -> None:
        Path(temp).write_text('{"ok": 2, "half')  # a partial write, then the process is interrupted
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, torn)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
