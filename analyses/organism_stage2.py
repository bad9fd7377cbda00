"""Stage I then Stage II on the model organism, with the behaviour check before and after.

    python analyses/organism_stage2.py --out runs/organism_stage2 [--steps 120] [--layers 1,2] [--alpha 1.0]

Prints the check table (unsteered, Stage I, Stage II) and writes DIR/report.json; the Stage II
curves are in DIR/stage2/metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from workbench.core.io import atomic_write_text
from workbench.core.models import load_vlm
from workbench.data.sources import load_dataset
from workbench.organism.check import run_check
from workbench.rewards.combined import RewardModel, RewardWeights
from workbench.rewards.toxicity import ToxicityScorer
from workbench.rewards.visual import load_clip
from workbench.stage1.pipeline import run_stage1
from workbench.stage2.loop import Stage2Config, Stage2Run
from workbench.steer.steering import Steering

KEYS = ("typo_harmful_asr", "clean_refusal", "sampled_refusal", "degenerate_rate", "typo_harmful_toxicity",
        "vqa_accuracy", "typo_benign_helpful", "text_harmful_refusal", "text_benign_helpful", "read_accuracy",
        "roleplay_harmful_asr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/organism_stage2")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--layers", default="1,2")
    parser.add_argument("--mode", default="adaptive")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--per-group", type=int, default=30)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pairing", default="best_worst", choices=["best_worst", "best_all"])
    parser.add_argument("--objective", default="dpo", choices=["dpo", "grpo"])
    parser.add_argument("--reference", default="initial", choices=["initial", "unsteered"])
    parser.add_argument("--safe-response", default=None,
                        help="off-policy safe reply for harmful prompts, e.g. the organism's own text-route refusal")
    parser.add_argument("--model", default="organism", help="organism, or a folder holding a retrained organism VLM")
    parser.add_argument("--clip", default="organism", help="organism, or the retrained organism's clip folder")
    args = parser.parse_args()
    out = Path(args.out)
    layers = [int(x) for x in args.layers.split(",")]
    vlm = load_vlm(args.model)
    train = [r for r in load_dataset("organism:train") if r.source in ("typographic", "text", "scenes")]
    stage1 = run_stage1(vlm, train, show_bar=False)
    stage1.save(out / "stage1")
    steering = Steering(stage1.vector, args.mode, args.alpha, tuple(layers))
    scorer = ToxicityScorer.create()
    before = run_check(vlm, steering, args.per_group, scorer=scorer, per_family=0)
    print("Stage I:\n" + before.table(), flush=True)
    config = Stage2Config(steps=args.steps, mode=args.mode, alpha=args.alpha, layers=layers, learning_rate=args.lr,
                          beta=args.beta, checkpoint_every=10, safe_response=args.safe_response,
                          pairing=args.pairing, objective=args.objective, reference=args.reference)
    rewards = RewardModel(scorer, load_clip(args.clip), RewardWeights())
    start = time.time()
    run = Stage2Run(vlm, stage1.vector, train, rewards, config, out / "stage2", resume=args.resume)
    refined = run.run(on_step=lambda m: print(f"step {m.step}: loss {m.loss:.3f} reward {m.reward:.3f} "
                                              f"(harmful {m.reward_harmful:.2f}, benign {m.reward_benign:.2f}) "
                                              f"refusal {m.refusal_rate:.2f} toxicity {m.toxicity:.2f} "
                                              f"pairs {m.pairs} margin {m.margin:.2f} {m.seconds:.1f}s", flush=True))
    minutes = (time.time() - start) / 60
    after = run_check(vlm, Steering(refined, args.mode, args.alpha, tuple(layers)), args.per_group, per_family=0,
                      scorer=scorer, baseline=False)
    rows = {"unsteered": before.unsteered, "stage1": before.steered, "stage2": after.steered}
    print(f"{'metric':<24}" + "".join(f"{name:>12}" for name in rows))
    for key in KEYS:
        print(f"{key:<24}" + "".join(f"{rows[name][key]:>12.3f}" for name in rows))
    print(f"Stage II: {args.steps} steps in {minutes:.1f} min; toxicity scorer {scorer.name}")
    save_curves(out / "stage2" / "metrics.jsonl", out)
    atomic_write_text(out / "report.json", json.dumps({"metrics": rows, "stage2_minutes": minutes,
                                                       "args": vars(args), "samples": after.samples}, indent=2))


def save_curves(metrics_file: Path, out: Path, window: int = 10) -> None:
    """DIR/stage2_curves.png: the per-step curves as a rolling mean over `window` steps (sampled rates are noisy)."""
    from workbench.export.plots import curves_figure, export

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    keys = ("loss", "reward_harmful", "reward_benign", "toxicity", "refusal_rate")
    smooth = []
    for i, row in enumerate(rows):
        recent = rows[max(0, i - window + 1):i + 1]
        values = {k: [r[k] for r in recent if not math.isnan(r[k])] for k in keys}  # NaN: no prompt of that label
        smooth.append({"step": row["step"], **{k: sum(v) / len(v) if v else None for k, v in values.items()}})
    figure = curves_figure(smooth, keys)
    figure.update_layout(title_text=f"Stage II on the organism (rolling mean of {window} steps)")
    export({"stage2_curves": figure}, out, formats=("png",))


if __name__ == "__main__":
    main()
