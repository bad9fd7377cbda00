"""Organism commands: `python -m workbench.organism train --out DIR` and `... check`
(also `python -m workbench organism check`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import add_steering_args, count_arg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.organism", description="the model organism")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the organism VLM and its CLIP from a seed (CPU, minutes)")
    train.add_argument("--out", required=True,
                       help="folder for vlm/ and clip/ (assets/organism to replace the shipped one)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--scale", type=float, default=1.0, help="multiply every step count (e.g. 0.1 for a smoke run)")
    check = commands.add_parser("check", help="evaluate planted behaviours on held-out prompts")
    add_check_args(check)
    args = parser.parse_args(argv)
    if args.command == "train":
        return train_command(args)
    return check_command(args)


def add_check_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="organism", help="organism (default) or a folder with a trained organism")
    parser.add_argument("--vectors", nargs="*", default=[], help="steering vector file(s); several are added")
    add_steering_args(parser)
    parser.add_argument("--per-group", type=count_arg(1), default=30,
                        help="prompts per group (VQA task, route x label)")
    parser.add_argument("--per-family", type=count_arg(0), default=20,
                        help="requests per label and task in each rendering family (0 skips the per-rendering table)")
    parser.add_argument("--seed", type=int, default=0, help="which held-out set to draw (0: the default one)")
    parser.add_argument("--json", default=None, help="write the metrics as JSON here")


def train_command(args: argparse.Namespace) -> int:
    from ..organism.clip import train_clip
    from ..organism.model import save
    from ..organism.train import TrainConfig, train_vlm

    base = TrainConfig(seed=args.seed)
    config = TrainConfig(seed=args.seed, **{k: max(1, int(getattr(base, k) * args.scale)) for k in
                                            ("vision_steps", "curriculum_steps", "lm_steps", "clip_steps")})
    out = Path(args.out)
    model, processor, log = train_vlm(config)
    save(model, processor, out / "vlm")
    log.update(train_clip(out / "clip", config))
    (out / "training_log.json").write_text(json.dumps({"config": vars(config), **log}, indent=2))
    print(json.dumps(log, indent=2))
    return 0


def check_command(args: argparse.Namespace) -> int:
    from ..core.io import atomic_write_text
    from ..core.models import load_vlm
    from ..organism.check import run_check
    from ..steer.steering import steering_for
    from ..steer.vectors import SteeringVector

    vlm = load_vlm(args.model, device="cpu")
    steering = None
    if args.vectors:
        vector = SteeringVector.load(args.vectors[0])
        for path in args.vectors[1:]:
            vector = vector + SteeringVector.load(path)
        steering, note = steering_for(vector, args.mode, args.alpha, args.layers, args.steer_at)
        print(note)
    result = run_check(vlm, steering, per_group=args.per_group, per_family=args.per_family, seed=args.seed)
    print(result.table())
    if args.json:
        atomic_write_text(args.json, result.to_json())
    return 0

