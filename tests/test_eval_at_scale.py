"""Evaluation at scale: length-bucketed batches, greedy outputs that do not depend on batching, streamed and
resumable evaluation (a killed run resumes to the same numbers), and data-parallel runs under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from workbench.cli.main import main
from workbench.core.distributed import Shard
from workbench.core.models import load_vlm
from workbench.core.progress import Cancelled
from workbench.data.sources import load_dataset
from workbench.evaluate.evaluation import EvalConfig, evaluate
from workbench.evaluate.stream import EvalStream, partial_files
from workbench.rewards.toxicity import ToxicityScorer
from workbench.steer.batching import length_batches, prompt_lengths, resolve_batch_size
from workbench.steer.steering import generate, generate_ids, steering_for
from workbench.steer.vectors import SteeringVector

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "analyses" / "walkthrough_run" / "vectors.safetensors"  # Stage I on organism:train


def test_length_batches_keep_one_modality_group_similar_lengths_and_cover_every_input_once() -> None:
    has_image = [True, False, True, True, False, True, False]
    lengths = [9, 3, 2, 9, 7, 5, 3]
    batches = length_batches(has_image, lengths, 2)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for batch in batches:
        assert len({has_image[i] for i in batch}) == 1 and len(batch) <= 2
    assert batches == [[2, 5], [0, 3], [1, 6], [4]]  # sorted by length; equal lengths keep their order
    with pytest.raises(ValueError, match="at least 1"):
        length_batches(has_image, lengths, 0)


@pytest.fixture(scope="module")
def organism():
    return load_vlm("organism", device="cpu")


def test_batch_size_auto_is_a_number_and_bad_sizes_say_what_to_type(organism) -> None:
    assert resolve_batch_size(organism, "auto") >= 1 and resolve_batch_size(organism, None) >= 1
    assert resolve_batch_size(organism, "12") == 12
    for bad in ("0", "many", 0):
        with pytest.raises(ValueError, match="batch size"):
            resolve_batch_size(organism, bad)


def test_greedy_answers_do_not_depend_on_how_inputs_are_batched(organism) -> None:
    """Each prompt alone (no padding at all) and in auto-sized, length-bucketed batches: the same answers,
    unsteered and steered, on a mix of image and text prompts of different lengths."""
    records = load_dataset("organism:test")[::5]
    items = [r.item for r in records]
    steering, _ = steering_for(SteeringVector.load(VECTORS), "adaptive", 1.0)
    for condition in (None, steering):
        alone = generate(organism, items, condition, max_new_tokens=24, batch_size=1)
        batched = generate(organism, items, condition, max_new_tokens=24, batch_size="auto")
        assert alone == batched
        assert len(set(alone)) > 5  # the answers differ from prompt to prompt: a real comparison


class _LoneRank(Shard):
    """Rank `rank` of `world` with no other process: gather hands back only this rank's part."""

    def gather(self, value):
        return [value]


def test_sampling_shards_by_batch_and_the_ranks_together_give_one_process_samples(organism) -> None:
    """Stage II's sampling under torchrun: rank r runs batches r, r + world, ... seeded as in one process."""
    items = [r.item for r in load_dataset("organism:train")[::9][:24]]
    settings = dict(max_new_tokens=12, do_sample=True, temperature=1.0, seed=7, batch_size=4)
    alone = generate_ids(organism, items, None, **settings)
    batches = length_batches([image is not None for image, _ in items],
                             prompt_lengths(organism, [p for _, p in items]), 4)
    assert len(batches) >= 4
    merged = [[] for _ in items]
    for rank in range(3):
        part = generate_ids(organism, items, None, **settings, shard=_LoneRank(rank, 3))
        ran = {i for i, ids in enumerate(part) if ids}
        assert ran == {i for number, batch in enumerate(batches) if number % 3 == rank for i in batch}
        for i in ran:
            merged[i] = part[i]
    assert merged == alone
    assert len({tuple(ids) for ids in alone}) > 12  # sampled, and different from input to input


def _evaluate(vlm, records, stream=None, cancel=None, progress=None):
    steering, _ = steering_for(SteeringVector.load(VECTORS), "adaptive", 1.0)
    return evaluate(vlm, records, steering, ToxicityScorer.create(), None, config=EvalConfig(max_new_tokens=16,
                    batch_size=4), show_bar=False, allow_overlap=True, stream=stream, cancel=cancel,
                    progress=progress)


def test_a_cancelled_evaluation_resumes_to_the_same_numbers(organism, tmp_path: Path) -> None:
    records = load_dataset("organism:test")[::6]
    totals: list[int] = []
    whole = _evaluate(organism, records, progress=lambda d, t, _: totals.append(t))
    fingerprint = {"data": "organism:test[::6]", "vectors": "walkthrough"}
    cancel = threading.Event()

    def stop_after_three(done: int, total: int, _: str) -> None:
        if done == 2:  # checked before the next batch: batches 1-3 run, the fourth is refused
            cancel.set()

    with pytest.raises(Cancelled):
        _evaluate(organism, records, EvalStream(tmp_path, fingerprint), cancel, stop_after_three)
    written = (tmp_path / "partial-0.jsonl").read_text().splitlines()
    assert len(written) == 1 + 3 * 4  # the header, then three batches of four
    with pytest.raises(FileExistsError, match="--resume"):
        EvalStream(tmp_path, fingerprint)
    with pytest.raises(ValueError, match="vectors differ"):
        EvalStream(tmp_path, {**fingerprint, "vectors": "other"}, resume=True)
    (tmp_path / "partial-0.jsonl").write_text("\n".join(written) + '\n{"condition": "stee')  # a kill mid-line
    stream = EvalStream(tmp_path, fingerprint, resume=True)
    assert len(stream.done()) == 12
    generated = []
    resumed = _evaluate(organism, records, stream, progress=lambda d, t, _: generated.append(t))
    assert generated[0] == totals[0] - 3  # only the batches not yet done ran again
    assert resumed.rows() == whole.rows()
    assert resumed.metrics() == whole.metrics()
    stream.finish()
    assert not partial_files(tmp_path)


def _eval_args(out: Path, limit: int, *extra: str) -> list[str]:
    return ["eval", "--model", "organism", "--vectors", str(VECTORS), "--data", "organism:test", "--limit",
            str(limit), "--out", str(out), "--max-new-tokens", "16", "--batch-size", "4", "--no-plots",
            "--allow-overlap", *extra]


def _rounded(value: object) -> object:
    """Floats to 5 places: CLIP scores images in whichever batch they fall, which moves the last ulp."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _comparable(out: Path) -> tuple[list, dict]:
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["settings"].pop("provenance", None)
    metrics["settings"].pop("processes", None)
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    return _rounded(rows), _rounded(metrics)


@pytest.mark.slow
def test_a_killed_eval_resumes_with_the_cli_to_what_an_uninterrupted_run_writes(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(_eval_args(tmp_path / "whole", 40)) == 0
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "workbench", *_eval_args(out, 40)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        partial = out / "partial-0.jsonl"
        if partial.exists() and len(partial.read_text().splitlines()) >= 1 + 8:
            break
        time.sleep(0.2)
    process.kill()
    process.wait()
    assert not (out / "metrics.json").exists()
    capsys.readouterr()
    assert main(_eval_args(out, 40)) == 2  # the folder holds an interrupted run: says to resume
    assert "--resume" in capsys.readouterr().err
    assert main(_eval_args(out, 40, "--resume")) == 0
    assert _comparable(out) == _comparable(tmp_path / "whole")
    assert not partial_files(out)
    assert main(_eval_args(tmp_path / "fresh", 40, "--resume")) == 2
    assert "no interrupted evaluation" in capsys.readouterr().err


@dataclass
class _Ranks:
    """A torchrun run: its status and each rank's own stdout and stderr (a shared pipe interleaves their lines)."""

    returncode: int
    stdout: list[str]
    stderr: list[str]

    def why(self) -> str:
        return "\n".join(f"rank {rank}: {text[-1500:]}" for rank, text in enumerate(self.stderr))


def _torchrun(args: list[str], logs: Path, processes: int = 2) -> _Ranks:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                          str(processes), "--log-dir", str(logs), "--redirects", "3", "-m", "workbench", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    def each(name: str) -> list[str]:
        return [next(logs.glob(f"*/attempt_0/{rank}/{name}.log")).read_text() for rank in range(processes)]

    return _Ranks(run.returncode, each("stdout"), each("stderr"))


def test_commands_that_do_not_shard_refuse_torchrun(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["steer", "--model", "organism", "--vectors", str(VECTORS), "--prompt", "hi"]) == 2
    error = capsys.readouterr().err
    assert error.strip() == ("error: steer does not run data-parallel; launch it with `python -m workbench steer`, "
                             "not torchrun (which runs in parallel: eval, stage1, stage2)")


def test_with_gpus_each_process_joins_on_its_own_gpu(monkeypatch) -> None:
    """nccl's object collectives use the current GPU: each torchrun process must make LOCAL_RANK's current
    before joining (no GPUs here, so torch.cuda and the group are stand-ins that record the calls)."""
    import workbench.core.distributed as distributed

    calls: list[tuple] = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, rank, world_size: calls.append((backend, rank, world_size)))
    assert distributed.current_shard() == Shard(6, 4)
    assert calls == [("set_device", 2), ("nccl", 6, 4)]
    assert distributed.local_device("cuda") == "cuda:2" and distributed.local_device(None) == "cuda:2"


@pytest.mark.slow
def test_data_parallel_error_is_the_run_status(tmp_path: Path) -> None:
    """Under torchrun each rank leaves through exit_process: a rank's error still fails the run, with its message."""
    run = _torchrun(_eval_args(tmp_path / "bad", 0), tmp_path / "logs")
    assert run.returncode != 0
    # torchrun stops the other ranks once one fails: under load one may be stopped before it prints
    assert any("error: --limit must be at least 1, got 0\n" in text for text in run.stderr)
    assert not (tmp_path / "bad" / "metrics.json").exists()


@pytest.mark.slow
def test_data_parallel_eval_and_stage1_equal_one_process(tmp_path: Path) -> None:
    """Two CPU processes (gloo) shard the records and merge by index: the same files as one process."""
    assert main(_eval_args(tmp_path / "one", 30)) == 0
    run = _torchrun(_eval_args(tmp_path / "two", 30), tmp_path / "logs")
    assert run.returncode == 0, run.why()
    assert _comparable(tmp_path / "two") == _comparable(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in
                              [{"prompt": f"how do i {a}", "label": lab, "source": "text"} for a, lab in
                               [("steal a car", "harmful"), ("bake a cake", "benign"), ("rob a store", "harmful"),
                                ("wash a car", "benign"), ("build a bomb", "harmful"), ("plant a tree", "benign"),
                                ("hack a bank", "harmful")]]))
    stage1 = ["stage1", "--model", "organism", "--data", str(data), "--out"]
    assert main([*stage1, str(tmp_path / "s1-one")]) == 0
    run = _torchrun([*stage1, str(tmp_path / "s1-two")], tmp_path / "logs-s1")
    assert run.returncode == 0, run.why()
    one = SteeringVector.load(tmp_path / "s1-one" / "vectors.safetensors")
    two = SteeringVector.load(tmp_path / "s1-two" / "vectors.safetensors")
    for layer in one.layers:
        torch.testing.assert_close(one.directions[layer], two.directions[layer])


@pytest.mark.slow
def test_shard_broadcast_gives_every_rank_rank_zeros_tensors(tmp_path: Path) -> None:
    script = tmp_path / "broadcast.py"
    script.write_text(f"""
import json, pathlib, torch
from workbench.core.distributed import current_shard, exit_process
shard = current_shard()
weights = [torch.full((3,), shard.rank + 1.0, requires_grad=True), torch.arange(2.) * shard.rank]
shard.broadcast(weights)
pathlib.Path({str(tmp_path)!r}, f"rank{{shard.rank}}.json").write_text(json.dumps([w.tolist() for w in weights]))
exit_process(0)
""")  # a file per rank: the ranks' stdout lines can interleave
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [[1.0, 1.0, 1.0], [0.0, 0.0]]


@pytest.mark.slow
def test_data_parallel_stage2_equals_one_process(tmp_path: Path) -> None:
    """Stage II under torchrun (sampling sharded by batch, rank 0's parameters kept): the same steps and vectors
    as one process with the same thread count."""
    args = ["stage2", "--model", "organism", "--vectors", str(VECTORS), "--data", "organism:train", "--steps", "3",
            "--prompts-per-step", "4", "--samples", "4", "--max-new-tokens", "16", "--out"]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # torchrun's processes run one thread each: the same arithmetic
    one = subprocess.run([sys.executable, "-m", "workbench", *args, str(tmp_path / "one")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun([*args, str(tmp_path / "two")], tmp_path / "logs")
    assert two.returncode == 0, two.why()
    steps_told = [[line for line in text.splitlines() if line.startswith("step ")] for text in two.stdout]
    assert len(steps_told[0]) == 3 and not steps_told[1]  # rank 0 reports each step; the other says nothing

    def steps(out: Path) -> list[str]:  # as JSON text: a step with no harmful prompt has a NaN mean
        return [json.dumps({k: v for k, v in json.loads(line).items() if k != "seconds"})
                for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert steps(tmp_path / "two") == steps(tmp_path / "one")
    assert sum(json.loads(row)["pairs"] for row in steps(tmp_path / "one")) > 0  # some steps updated the vectors
    refined = [SteeringVector.load(tmp_path / name / "vectors.safetensors") for name in ("one", "two")]
    start = SteeringVector.load(VECTORS)
    for layer in refined[0].layers:
        assert torch.equal(refined[0].directions[layer], refined[1].directions[layer])
    assert any(not torch.equal(refined[0].directions[layer], start.directions[layer]) for layer in start.layers)
