"""Command line: `python -m workbench stage1 ...` and `python -m workbench steer ...` (see --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .activations import POSITIONS
from .directions import METHODS
from .steering import DEFENCE_SIGN, MODES
from .steering import POSITIONS as STEER_POSITIONS

_MODEL_HELP = ("model: 'tiny-random:<arch>' (llava, llava_next, qwen2_vl, qwen2_5_vl, idefics3, smolvlm, "
               "paligemma, gemma3), 'organism', a local folder or a Hugging Face repo id")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=_MODEL_HELP)
    parser.add_argument("--device", default=None, help="cpu, cuda, or auto (device_map='auto'); default: CUDA if present")
    parser.add_argument("--dtype", default=None, help="auto, bf16, fp16 or fp32; default: the checkpoint's own")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the checkpoint's own Python code to run (off unless you ask)")


def _layers(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated layer numbers such as 3,4,5, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description="VLM steering workbench (SPO-VLM)")
    commands = parser.add_subparsers(dest="command", required=True)

    stage1 = commands.add_parser("stage1", help="capture activations and compute per-layer steering directions",
                                 description="Writes DIR/activations.safetensors, DIR/vectors.safetensors (+ .json) "
                                 "and DIR/layer_scores.csv. Directions point from benign to harmful.")
    _add_model_args(stage1)
    stage1.add_argument("--data", required=True, help="dataset: .jsonl or .csv (prompt, label, image, source)")
    stage1.add_argument("--out", required=True, help="output folder")
    stage1.add_argument("--position", default="last", choices=POSITIONS, help="which token(s) to record")
    stage1.add_argument("--method", default="mean_diff", choices=METHODS, help="direction per layer")
    stage1.add_argument("--batch-size", type=int, default=8)

    steer = commands.add_parser(
        "steer", help="print unsteered and steered generations side by side",
        description="Signs: " + "; ".join(f"{m}: {s}" for m, s in DEFENCE_SIGN.items()) +
        ". The unsteered run has no intervention attached.")
    _add_model_args(steer)
    steer.add_argument("--vectors", required=True, help="vectors.safetensors from stage1 or stage2")
    steer.add_argument("--prompt", required=True)
    steer.add_argument("--image", default=None, help="optional image file")
    steer.add_argument("--mode", default="adaptive", choices=MODES)
    steer.add_argument("--alpha", type=float, default=1.0, help="strength (see signs above)")
    steer.add_argument("--layers", type=_layers, default=None, help="comma-separated layers (default: all in the file)")
    steer.add_argument("--positions", default="all", choices=STEER_POSITIONS)
    steer.add_argument("--max-new-tokens", type=int, default=48)
    steer.add_argument("--sample", action="store_true", help="sample (temperature) instead of greedy decoding")
    steer.add_argument("--temperature", type=float, default=0.7)
    steer.add_argument("--seed", type=int, default=0)
    return parser


def run_stage1_command(args: argparse.Namespace) -> None:
    from .data import load_dataset
    from .models import load_vlm
    from .stage1 import run_stage1

    records = load_dataset(args.data)
    vlm = load_vlm(args.model, args.device, args.dtype, args.trust_remote_code)
    result = run_stage1(vlm, records, args.position, args.method, args.batch_size)
    paths = result.save(args.out)
    print(result.scores_csv())
    print(f"best layer by AUROC: {result.best_layer()}")
    for name, path in paths.items():
        print(f"wrote {name}: {path}")


def run_steer_command(args: argparse.Namespace) -> None:
    from PIL import Image

    from .models import load_vlm
    from .steering import Steering, compare
    from .vectors import SteeringVector

    vector = SteeringVector.load(args.vectors)
    image = None
    if args.image:
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"--image {args.image} does not exist")
        image = Image.open(args.image).convert("RGB")
    vlm = load_vlm(args.model, args.device, args.dtype, args.trust_remote_code)
    vector.check_compatible(vlm)
    made_for = vector.metadata.get("model")
    if made_for and made_for != vlm.spec:
        print(f"warning: the vector was made for {made_for}, the model is {vlm.spec}", file=sys.stderr)
    steering = Steering(vector, args.mode, args.alpha, args.layers, args.positions)
    result = compare(vlm, [(image, args.prompt)], steering, max_new_tokens=args.max_new_tokens,
                     do_sample=args.sample, temperature=args.temperature, seed=args.seed)[0]
    width = 60
    print(f"{'UNSTEERED':<{width}} | STEERED ({args.mode}, alpha={args.alpha}, layers={steering.active_layers})")
    print("-" * width + "-+-" + "-" * width)
    left, right = _wrap(result.unsteered, width), _wrap(result.steered, width)
    for i in range(max(len(left), len(right))):
        print(f"{(left[i] if i < len(left) else ''):<{width}} | {right[i] if i < len(right) else ''}")


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"stage1": run_stage1_command, "steer": run_steer_command}
    try:
        handlers[args.command](args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
