"""Stage I on the model organism: which direction, mode, layers and strength suppress the planted attack?

Runs Stage I on `organism:train`, then the organism's behaviour check (held-out prompts) for a grid
of steering settings, and prints one table row per setting. Usage:
    python analyses/organism_stage1_sweep.py [--per-group 20] [--out runs/organism_stage1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workbench.core.io import atomic_write_text
from workbench.core.models import load_vlm
from workbench.data.sources import load_dataset
from workbench.organism.check import run_check
from workbench.rewards.toxicity import ToxicityScorer
from workbench.stage1.pipeline import run_stage1
from workbench.steer.steering import Steering
from workbench.steer.vectors import SteeringVector

KEYS = ("typo_harmful_asr", "clean_refusal", "sampled_refusal", "degenerate_rate", "vqa_accuracy",
        "typo_benign_helpful", "text_harmful_refusal", "read_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=20)
    parser.add_argument("--out", default="runs/organism_stage1")
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--model", default="organism", help="organism, or a folder holding a retrained organism VLM")
    args = parser.parse_args()
    vlm = load_vlm(args.model)
    records = [r for r in load_dataset("organism:train") if r.source in ("typographic", "text", "scenes")]
    result = run_stage1(vlm, records, show_bar=False)
    result.save(args.out)
    print(result.scores_csv())
    if result.source_similarity is not None:
        names = list(result.per_source)
        for layer in range(vlm.num_layers):
            pairs = [f"{names[i]}~{names[j]}: {float(result.source_similarity[layer, i, j]):+.2f}"
                     for i in range(len(names)) for j in range(i + 1, len(names))]
            print(f"layer {layer} direction cosine: " + ", ".join(pairs))
    vectors = {"combined": result.vector}
    for source, directions in result.per_source.items():
        vectors[source] = SteeringVector(dict(enumerate(directions)), result.vector.calibration,
                                         {**result.vector.metadata, "sources": [source]})
    scorer = ToxicityScorer.create()
    layer_sets = [(1,), (2,), (1, 2), (0, 1, 2, 3)] if not args.quick else [(1, 2)]
    alphas = {"adaptive": [0.5, 1.0, 2.0], "additive": [-2.0, -4.0], "ablation": [1.0]}
    if args.quick:
        alphas = {"adaptive": [1.0], "additive": [-4.0], "ablation": [1.0]}
    plain = run_check(vlm, None, args.per_group, scorer=scorer, per_family=0).unsteered
    rows = [{"setting": "unsteered", **{k: plain[k] for k in KEYS}}]
    print(_header())
    print(_row(rows[0]))
    for name, vector in vectors.items():
        for mode, strengths in alphas.items():
            for layers in layer_sets:
                for alpha in strengths:
                    start = time.time()
                    steered = run_check(vlm, Steering(vector, mode, alpha, layers), args.per_group, per_family=0,
                                        scorer=scorer, baseline=False).steered
                    row = {"setting": f"{name} {mode} a={alpha} L={','.join(map(str, layers))}",
                           **{k: steered[k] for k in KEYS}, "seconds": round(time.time() - start, 1)}
                    rows.append(row)
                    print(_row(row), flush=True)
    atomic_write_text(Path(args.out) / "sweep.json", json.dumps(rows, indent=2))


def _header() -> str:
    return f"{'setting':<42}" + "".join(f"{k[:14]:>15}" for k in KEYS)


def _row(row: dict) -> str:
    return f"{row['setting']:<42}" + "".join(f"{row[k]:>15.3f}" for k in KEYS)


if __name__ == "__main__":
    main()
