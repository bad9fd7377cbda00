"""Evaluation speed on the organism, as ratios measured in one run (this machine is noisy).

1. End to end: `eval` of organism:test (220 records, both conditions, Stage I vectors, adaptive alpha 1 on all
   layers) with this checkout vs the first release (commit fcbbfee, checked out as a git worktree), both as
   `python -m workbench eval` subprocesses on the same exported data and the same organism weights, run
   alternately. Reported: records/s each and the ratio (target >= 2); then the same command with --limit 4 for each
   version, the fixed cost (imports, loading, a few records), and the throughput past it (the work that grows with
   the dataset: target >= 2.5x the release's).
2. In process: steered / plain generation over the same prompts, one layer and all layers (targets <= 1.03 and
   <= 1.15 on CPU), alternating plain and steered runs.
3. Two processes (torchrun, gloo) vs one for the same eval (on 2 cores expect well under 2x).
Run: python benchmarks/bench_eval.py [--repeats N] [--skip-release] [--skip-parallel]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "fcbbfee"
VECTORS = ROOT / "analyses" / "walkthrough_run" / "vectors.safetensors"
SMALL = 4  # records in the fixed-cost run (--limit)


def export_records(folder: Path, data: str) -> Path:
    """`data` as a JSONL with PNG files beside it: a dataset both versions read the same way."""
    from workbench.data.sources import load_dataset

    rows = []
    for index, record in enumerate(load_dataset(data)):
        row = {"prompt": record.prompt, "label": record.label, "source": record.source}
        image = record.load_image()
        if image is not None:
            image.save(folder / f"{index}.png")
            row["image"] = f"{index}.png"
        rows.append(row)
    path = folder / f"{data.replace(':', '-')}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run_eval(code: Path, data: Path, vectors: Path, out: Path, extra: list[str] = (), launcher: list[str] = ()
             ) -> float:
    """Wall seconds of one `eval` run of the workbench in `code` (model load included: end to end)."""
    env = dict(os.environ, PYTHONPATH=str(code))
    command = [*(launcher or [sys.executable, "-m"]), "workbench", "eval", "--model", str(ROOT / "assets/organism/vlm"),
               "--vectors", str(vectors), "--data", str(data), "--out", str(out), "--no-plots",
               "--clip", str(ROOT / "assets/organism/clip"), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"eval failed in {code}:\n{done.stderr[-3000:]}")
    return seconds


def release_checkout(folder: Path) -> Path:
    """The first release as a git worktree (removed at the end by the caller's temporary folder)."""
    target = folder / "release"
    subprocess.run(["git", "worktree", "add", "--detach", str(target), RELEASE], cwd=ROOT, check=True,
                   capture_output=True)
    return target


def release_vectors(release: Path, train: Path, folder: Path) -> Path:
    """Stage I vectors made by the release itself (its file format), on the same exported training data."""
    out = folder / "release-stage1"
    env = dict(os.environ, PYTHONPATH=str(release))
    done = subprocess.run([sys.executable, "-m", "workbench", "stage1", "--model", str(ROOT / "assets/organism/vlm"),
                           "--data", str(train), "--out", str(out)], cwd=release, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"the release's stage1 failed:\n{done.stderr[-3000:]}")
    return out / "vectors.safetensors"


def steering_overhead(repeats: int) -> dict[str, float]:
    """Steered / plain wall time of generate over organism:test prompts (one layer; all layers)."""
    from workbench.core.models import load_vlm
    from workbench.data.sources import load_dataset
    from workbench.steer.steering import generate, steering_for
    from workbench.steer.vectors import SteeringVector

    vlm = load_vlm("organism", device="cpu")
    items = [r.item for r in load_dataset("organism:test")]
    vector = SteeringVector.load(VECTORS)
    one, _ = steering_for(vector, "adaptive", 1.0, (2,))
    every, _ = steering_for(vector, "adaptive", 1.0)
    times: dict[str, list[float]] = {"plain": [], "one layer": [], "all layers": []}
    generate(vlm, items[:8], None, max_new_tokens=4)  # warm-up
    for _ in range(repeats):
        for name, steering in (("plain", None), ("one layer", one), ("all layers", every)):
            start = time.perf_counter()
            generate(vlm, items, steering, max_new_tokens=48, batch_size="auto")
            times[name].append(time.perf_counter() - start)
    plain = statistics.median(times["plain"])
    return {name: statistics.median(values) / plain for name, values in times.items() if name != "plain"}


def _responses(out: Path) -> list[tuple]:
    """What each condition answered to each record (scores may move in the last ulp with CLIP's batching)."""
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    return [(r["condition"], r["index"], r["response"]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-release", action="store_true", help="no end-to-end comparison with fcbbfee")
    parser.add_argument("--skip-parallel", action="store_true", help="no torchrun comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        test = export_records(folder, "organism:test")
        records = len(test.read_text().splitlines())
        if not args.skip_release:
            release = release_checkout(folder)
            try:
                old_vectors = release_vectors(release, export_records(folder, "organism:train"), folder)
                old, new, old_small, new_small = [], [], [], []
                small = ["--limit", str(SMALL)]
                for repeat in range(args.repeats):
                    old.append(run_eval(release, test, old_vectors, folder / f"old-{repeat}"))
                    new.append(run_eval(ROOT, test, VECTORS, folder / f"new-{repeat}", ["--allow-overlap"]))
                    old_small.append(run_eval(release, test, old_vectors, folder / f"old-small-{repeat}", small))
                    new_small.append(run_eval(ROOT, test, VECTORS, folder / f"new-small-{repeat}",
                                              ["--allow-overlap", *small]))
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(release)], cwd=ROOT, capture_output=True)
            old_s, new_s = statistics.median(old), statistics.median(new)
            old_rate, new_rate = records * 2 / old_s, records * 2 / new_s
            print(f"eval organism:test end to end ({records} records x 2 conditions, median of {args.repeats}): "
                  f"release {RELEASE} {old_rate:.2f} generations/s ({old_s:.1f} s), this checkout {new_rate:.2f} "
                  f"generations/s ({new_s:.1f} s), ratio {new_rate / old_rate:.2f}x (target >= 2)")
            # The same command with --limit SMALL: imports, model and scorer loading and a few records; what is left
            # after subtracting it is the work that grows with the dataset (an explanation, not the target).
            old_fixed, new_fixed = statistics.median(old_small), statistics.median(new_small)
            print(f"  fixed cost (same command, --limit {SMALL}): release {old_fixed:.1f} s, this checkout "
                  f"{new_fixed:.1f} s")
            rest = (records - SMALL) * 2
            print(f"  throughput past the fixed cost ({records - SMALL} records x 2): release "
                  f"{rest / (old_s - old_fixed):.2f} generations/s, this checkout {rest / (new_s - new_fixed):.2f} "
                  f"generations/s, ratio {(old_s - old_fixed) / (new_s - new_fixed):.2f}x (target >= 2.5)")
        for name, ratio in steering_overhead(max(args.repeats, 3)).items():
            target = 1.03 if name == "one layer" else 1.15
            print(f"steered ({name}) / plain generate: {ratio:.3f} (target <= {target})")
        if not args.skip_parallel:
            one = run_eval(ROOT, test, VECTORS, folder / "one-process", ["--allow-overlap"])
            two = run_eval(ROOT, test, VECTORS, folder / "two-processes", ["--allow-overlap"],
                           [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m"])
            same = _responses(folder / "one-process") == _responses(folder / "two-processes")
            print(f"two processes / one process (torchrun, gloo, 2 cores): {one / two:.2f}x faster; "
                  f"identical generations: {same}")


if __name__ == "__main__":
    main()
