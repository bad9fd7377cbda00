"""`workbench attack pgd`: visual adversarial images (PGD-toxic, PGD-JB) as a dataset the other commands read."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..attacks.targets import target_strings
from .args import add_model_args, count_arg


def add_attack_parser(commands: argparse._SubParsersAction) -> None:
    attack = commands.add_parser("attack", help="make attack inputs: visual adversarial images (PGD)")
    kinds = attack.add_subparsers(dest="attack_command", required=True)
    pgd = kinds.add_parser(
        "pgd", help="PGD on the image toward target continuations (Qi et al. 2023), the model frozen",
        description="Writes DIR/pgd-*.png, DIR/attack.json (settings, loss curve, final and clean loss), "
        "DIR/dataset.jsonl (each image with each prompt; label harmful, source pgd-<targets>-eps<N>) and run.json.")
    add_model_args(pgd)
    pgd.add_argument("--prompts", required=True, help="a data set whose prompts the image must work with "
                     "(organism:test, a .jsonl/.csv file, a benchmark)")
    pgd.add_argument("--label", default="harmful", choices=("harmful", "benign", "all"),
                     help="which of its records' prompts (default harmful)")
    pgd.add_argument("--source", default=None, help="only records of this source (e.g. text)")
    pgd.add_argument("--limit", type=count_arg(1), default=None, help="at most N prompts (stratified sample)")
    pgd.add_argument("--targets", default="affirmative", help="affirmative (PGD-JB), toxic (PGD-toxic; the organism's "
                     "insults, elsewhere give a file) or a text file of target strings, one per line")
    pgd.add_argument("--epsilon", default="32/255", help="L∞ budget in pixel units: 16/255, 32/255, 64/255 or "
                     "unconstrained")
    pgd.add_argument("--step-size", default="1/255")
    pgd.add_argument("--steps", type=count_arg(1), default=200)
    pgd.add_argument("--batch", type=count_arg(1), default=8, help="(prompt, target) pairs per step")
    pgd.add_argument("--per-prompt", action="store_true", help="one image per prompt (default: one universal image)")
    pgd.add_argument("--image", default=None, help="the clean starting image (default: a blank light-grey image)")
    pgd.add_argument("--no-random-start", action="store_true")
    pgd.add_argument("--keep", default="best", choices=("best", "last"),
                     help="which iterate is saved: the one with the lowest running loss (default) or the last (Qi et "
                     "al.)")
    pgd.add_argument("--seed", type=int, default=0)
    pgd.add_argument("--vectors", default=None, help="attack the steered model (an adaptive attacker) with these "
                     "vectors, steered as they record")
    pgd.add_argument("--out", required=True, help="output folder (a new or empty one, or --overwrite)")
    pgd.add_argument("--overwrite", action="store_true")
    typo = kinds.add_parser(
        "typographic", help="FigStep-style images: each instruction drawn with numbered empty steps",
        description="Writes DIR/typo-*.png and DIR/dataset.jsonl (each image with the neutral FigStep prompt; label "
        "harmful, the instruction as its behaviour), which stage1, stage2, eval and compare read.")
    typo.add_argument("--instructions", required=True, help="a text file (one instruction per line) or a data set "
                      "(its harmful records' behaviours, else their prompts), e.g. advbench:/path/to/copy")
    typo.add_argument("--limit", type=count_arg(1), default=None,
                      help="at most N instructions (the first N distinct ones, in file order)")
    typo.add_argument("--size", type=int, default=760, help="image side in pixels (default 760, FigStep's)")
    typo.add_argument("--font-size", type=int, default=60)
    typo.add_argument("--steps", type=int, default=3, help="numbered empty steps under the instruction")
    typo.add_argument("--prompt", default=None, help="the text prompt (default: FigStep's neutral one)")
    typo.add_argument("--source", default="typographic", help="the records' source name")
    typo.add_argument("--out", required=True, help="output folder (a new or empty one, or --overwrite)")
    typo.add_argument("--overwrite", action="store_true")


def instructions_from(spec: str) -> list[str]:
    """A text file's lines, or a data set's harmful records' behaviours (else their prompts)."""
    from ..data.sources import load_dataset

    path = Path(spec)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise ValueError(f"--instructions {spec} does not exist")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        lines = [r.behavior or r.prompt for r in load_dataset(spec) if r.label == "harmful"]
    if not lines:
        raise ValueError(f"--instructions {spec} holds no instruction (a .txt file's lines, or harmful records)")
    return list(dict.fromkeys(" ".join(line.split()) for line in lines))  # one image per distinct instruction


def run_attack_command(args: argparse.Namespace) -> None:
    if args.attack_command == "typographic":
        return run_typographic_command(args)
    from ..attacks.job import PGDSpec, blank_image, pick_prompts, run_pgd_job
    from ..attacks.pgd import PGDSettings, parse_epsilon
    from ..core.jobs import check_out
    from ..core.models import load_vlm
    from ..core.records import open_image
    from ..data.sources import load_dataset
    from ..steer.steering import steering_for
    from ..steer.vectors import SteeringVector

    check_out(args.out, "attack", args.overwrite)
    settings = PGDSettings(parse_epsilon(args.epsilon), float(parse_epsilon(args.step_size) or 0), args.steps,
                           not args.no_random_start, args.seed, args.batch, args.keep)
    targets = target_strings(args.targets, args.model)
    records = pick_prompts(load_dataset(args.prompts), args.label, args.source, args.limit, args.prompts)
    vlm = load_vlm(args.model, args.device, args.dtype, args.trust_remote_code)
    image = open_image(args.image) if args.image else None
    if image is None:
        image = blank_image()
    steering = None
    if args.vectors:
        steering, note = steering_for(SteeringVector.load(args.vectors))
        print(note)
    spec = PGDSpec(args.model, args.prompts, args.targets, settings, not args.per_prompt, args.image or "blank",
                   args.vectors)
    result = run_pgd_job(spec, args.out, vlm, image, records, targets, steering,
                         progress=lambda done, total, text: print(text, flush=True) if done % 20 == 0 or done == total
                         else None)
    print(f"target loss per token: clean {result.clean_loss:.3f} -> attacked {result.final_loss:.3f} (the saved PNG); "
          f"wrote {Path(args.out) / 'dataset.jsonl'} (source {spec.source})")


def run_typographic_command(args: argparse.Namespace) -> None:
    from ..attacks.job import TypographicSpec, run_typographic_job
    from ..attacks.typographic import FIGSTEP_PROMPT, TypographicStyle
    from ..core.jobs import check_out

    check_out(args.out, "attack", args.overwrite)
    style = TypographicStyle(size=args.size, font_size=args.font_size, steps=args.steps)
    instructions = instructions_from(args.instructions)[:args.limit]
    spec = TypographicSpec(args.instructions, style, args.prompt or FIGSTEP_PROMPT, args.source)
    records = run_typographic_job(spec, args.out, instructions)
    print(f"wrote {len(records)} images and {Path(args.out) / 'dataset.jsonl'} (source {args.source})")
