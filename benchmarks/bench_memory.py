"""Peak memory of activation capture and Stage II on 100 vs 1000 records (the organism), each in a fresh
process so the peaks do not mix.

    python benchmarks/bench_memory.py

Records are written to disk as PNG + JSONL (images load lazily, as for a user's dataset). Prints peak RSS
per job and size, and the 1000/100 ratio (flat memory: a ratio near 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from workbench.data.sources import load_dataset
from workbench.core.models import load_vlm
job, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
vlm = load_vlm("organism")
records = load_dataset(data)
start = time.time()
if job == "capture":
    from workbench.stage1.activations import capture
    capture(vlm, records, "last", 16, show_bar=False)
else:
    from workbench.stage1.pipeline import run_stage1
    from workbench.rewards.combined import RewardModel, RewardWeights
    from workbench.rewards.toxicity import ToxicityScorer
    from workbench.stage2.loop import Stage2Config, Stage2Run
    vector = run_stage1(vlm, records[:64], show_bar=False).vector
    config = Stage2Config(steps=8, prompts_per_step=8, samples_per_prompt=4, max_new_tokens=32, layers=[1, 2])
    Stage2Run(vlm, vector, records, RewardModel(ToxicityScorer.fallback(), None, RewardWeights()), config,
              out).run(show_bar=False)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"peak_mb": peak_mb, "seconds": time.time() - start}}))
"""


def write_dataset(folder: Path, count: int) -> Path:
    from workbench.organism import dataset

    base = dataset("train")
    lines = []
    for index in range(count):
        record = base[index % len(base)]
        row = {"prompt": record.prompt, "label": record.label, "source": record.source}
        if record.image_data is not None:
            name = f"img/{index}.png"
            (folder / "img").mkdir(exist_ok=True)
            record.image_data.save(folder / name)
            row["image"] = name
        lines.append(json.dumps(row))
    path = folder / "data.jsonl"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    results: dict[tuple[str, int], dict] = {}
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        for count in (100, 1000):
            folder = Path(tmp) / str(count)
            folder.mkdir()
            data = write_dataset(folder, count)
            for job in ("capture", "stage2"):
                output = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), job, str(data),
                                         str(folder / f"run-{job}")], env=env, capture_output=True, text=True,
                                        check=True).stdout
                results[(job, count)] = json.loads(output.strip().splitlines()[-1])
    for job in ("capture", "stage2"):
        small, large = results[(job, 100)], results[(job, 1000)]
        print(f"{job:8} peak RSS: 100 records {small['peak_mb']:.0f} MB ({small['seconds']:.1f} s), 1000 records "
              f"{large['peak_mb']:.0f} MB ({large['seconds']:.1f} s); ratio {large['peak_mb'] / small['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
