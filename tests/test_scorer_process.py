"""The scorers in a second process (`rewards.process`): the same scores as in process, and no process left over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image

from workbench.rewards.process import ScorerProcess, ScorerSpec, spec_for, start_early, take_early
from workbench.rewards.toxicity import ToxicityScorer
from workbench.rewards.visual import load_clip

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "analyses" / "walkthrough_run" / "vectors.safetensors"


@pytest.fixture(scope="module")
def child() -> ScorerProcess:
    process = ScorerProcess(ScorerSpec("organism"))
    yield process
    process.close()


def test_the_child_scores_what_the_in_process_scorers_score(child: ScorerProcess) -> None:
    toxicity, clip, _ = child.scorers()
    here_toxicity, here_clip = ToxicityScorer.create(), load_clip("organism")
    assert (toxicity.name, toxicity.note, clip.name) == (here_toxicity.name, here_toxicity.note, here_clip.name)
    texts = ["a red square", "", "you idiot, I will hurt you", "line one\nline two \u00e9\u4e2d"]
    images = [make_image("red"), make_image("blue", (64, 48)).convert("L"),
              make_image("white", text="bomb").convert("RGBA"), make_image("green", (7, 300))]
    assert toxicity(texts) == here_toxicity(texts)  # exactly: the same code on the same texts
    assert clip(images, texts) == here_clip(images, texts)  # and on the same pixels (modes converted alike)
    assert len(set(clip(images, texts))) == 4  # four different pairs: a wrong transfer would show
    assert clip([], []) == []
    assert list(Path(child.folder).iterdir()) == []  # each request's pixels are gone once it is answered
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        clip(images[:2], texts[:1])


def test_a_bad_request_is_one_error_and_the_child_goes_on(child: ScorerProcess) -> None:
    pixels = Path(child.folder) / "short"
    pixels.write_bytes(bytes(10))
    with pytest.raises(ChildProcessError, match=r"scorer process: ValueError: 10 bytes of pixels for images of "
                       r"sizes \[\[4, 4\]\]"):
        child._request({"clip": ["x"], "sizes": [[4, 4]], "pixels": str(pixels)})
    toxicity, _, _ = child.scorers()
    assert len(toxicity(["still here"])) == 1


def test_a_child_that_died_says_so_in_one_line() -> None:
    process = ScorerProcess(ScorerSpec("organism"))
    toxicity, _, _ = process.scorers()
    process._child.kill()
    process._child.wait()
    with pytest.raises(ChildProcessError, match=r"the scorer process stopped \(exit code -9.*--score-in-process"):
        toxicity(["hello"])
    process.close()
    assert not Path(process.folder).exists()


def test_an_early_child_is_used_only_for_the_scorers_it_loads() -> None:
    start_early(["eval", "--model", "organism", "--data", "x", "--out", "y"])
    assert take_early(spec_for("organism", None, None, None)) is not None  # the guess was right: used
    assert take_early(spec_for("organism", None, None, None)) is None  # and taken once
    start_early(["eval", "--model=organism", "--clip", "ViT-B-32:openai"])
    from workbench.rewards import process as module

    early = module._EARLY
    assert take_early(spec_for("organism", None, None, None)) is None  # a different CLIP: ended, not used
    assert early is not None and early._child.poll() is not None
    for argv in (["stage1", "--model", "organism"], ["eval", "--help"], ["eval", "--score-in-process"], []):
        start_early(argv)
        assert module._EARLY is None, argv


def test_no_early_child_without_a_spare_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.rewards import process as module

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert module.spare_core()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # three processes on four cores: no second core each
    assert not module.spare_core()
    start_early(["eval", "--model", "organism"])
    assert module._EARLY is None
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert not module.spare_core()


def _eval(out: Path, *extra: str, logs: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m workbench eval`; with `logs`, its output goes to files there (a pipe would also wait for every
    process that inherited it, hiding one left running)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "workbench", "eval", "--model", "organism", "--vectors", str(VECTORS), "--data",
               "organism:test", "--limit", "40", "--max-new-tokens", "8", "--no-plots", "--out", str(out), *extra]
    if logs is None:
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    with (logs / "stdout").open("w") as stdout, (logs / "stderr").open("w") as stderr:
        code = subprocess.run(command, stdout=stdout, stderr=stderr, env=env, cwd=ROOT, timeout=300).returncode
    return subprocess.CompletedProcess(command, code, (logs / "stdout").read_text(), (logs / "stderr").read_text())


def _children_with(marker: str) -> list[str]:
    """Processes whose command line holds `marker` (a path only this test uses)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_eval_scores_the_same_in_a_second_process_and_leaves_none_behind(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.symlink_to(ROOT / "assets" / "organism" / "clip")  # a CLIP path only this test's processes name
    child = _eval(tmp_path / "child", "--clip", str(clip))
    here = _eval(tmp_path / "here", "--clip", str(clip), "--score-in-process")
    assert child.returncode == 0 and here.returncode == 0, child.stderr[-2000:] + here.stderr[-2000:]
    assert "scorers: loaded in a second process" in child.stdout
    assert "second process" not in here.stdout
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("child", "here")]
    for m in metrics:
        m["settings"].pop("provenance", None)
    assert metrics[0] == metrics[1]
    rows = [(tmp_path / run / "generations.jsonl").read_text() for run in ("child", "here")]
    assert rows[0] == rows[1] and '"visual": 0.' in rows[0]  # CLIP scored some rows, the same in both
    bad = _eval(tmp_path / "bad", "--clip", str(clip), "--limit", "0", logs=tmp_path)  # fails; the child was loading
    assert bad.returncode == 2 and "--limit must be at least 1" in bad.stderr
    assert _children_with(str(clip)) == []  # ended with its parent, not left to finish loading


def test_a_clip_that_does_not_load_is_one_warning_as_in_process(capsys: pytest.CaptureFixture) -> None:
    from argparse import Namespace

    from workbench.cli_common import scorers
    from workbench.rewards import process as module

    start_early(["eval", "--model", "organism", "--clip", "/no/such/clip"])  # what `python -m workbench` does
    early = module._EARLY
    args = Namespace(model="organism", clip="/no/such/clip", detoxify_checkpoint=None, detoxify_config=None,
                     score_in_process=False)
    toxicity, clip = scorers(args, child=True)
    toxicity(["one"]), toxicity(["two"])
    early.close()
    out = capsys.readouterr()
    assert early is not None and "scorers: loaded in a second process" in out.out
    warnings = out.err.splitlines()
    assert clip is None and warnings == ["warning: no visual-consistency score (/no/such/clip: CLIP folder "
                                         "/no/such/clip does not exist (give 'organism', a folder with "
                                         "open_clip_config.json, or ARCH:PRETRAINED such as ViT-B-32:openai))"]
    assert scorers(args)[1] is None and capsys.readouterr().err.splitlines() == warnings  # in process: the same
