"""`workbench compare`: every defence on every data set under one judge, as one table (Markdown, JSON, figures)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import add_model_args, add_reward_args, add_steering_args, count_arg
from .common import scorers, steering_choice


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare", help="compare defences: rows = no defence, each vector file (and a system prompt), columns = "
        "ASR per attack source, utility per utility set, over-refusal, toxicity",
        description="Writes DIR/compare.md, DIR/compare.json and DIR/figures/. Each vector file is steered with its "
        "recorded settings unless --mode/--alpha/--layers/--steer-at override them for every file.")
    add_model_args(compare)
    compare.add_argument("--data", nargs="+", required=True, help="data sets (organism:test, a benchmark, a file)")
    compare.add_argument("--vectors", nargs="*", default=[], help="vectors.safetensors files, one defence each")
    compare.add_argument("--names", nargs="*", default=None, help="a row name per vector file (default: file stem "
                         "and its folder)")
    compare.add_argument("--system-prompt", default=None, help="add a row: this safety system prompt, no steering")
    compare.add_argument("--judge", default="auto", help="the ASR judge for every row (see `eval --help`)")
    compare.add_argument("--limit", type=count_arg(1), default=None, help="N records of each set (a seeded sample "
                         "stratified by label, source and behaviour)")
    compare.add_argument("--max-new-tokens", type=count_arg(1), default=48)
    compare.add_argument("--batch-size", default="auto",
                         help="prompts per generation batch; auto (default) sizes it to the device")
    compare.add_argument("--allow-overlap", action="store_true", help="allow records the vectors were trained on")
    compare.add_argument("--no-plots", action="store_true", help="skip PNG/SVG figures (no browser needed)")
    compare.add_argument("--out", required=True, help="output folder (a new or empty one, or --overwrite)")
    compare.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    add_steering_args(compare)
    add_reward_args(compare)


def run_compare_command(args: argparse.Namespace) -> None:
    from ..core.jobs import check_out
    from ..core.models import load_vlm
    from ..data.sources import load_dataset
    from ..evaluate.compare import markdown
    from ..evaluate.job import CompareSpec, run_compare_job

    check_out(args.out, "compare", args.overwrite)
    names = args.names or [f"{Path(v).parent.name}/{Path(v).stem}" for v in args.vectors]
    if len(names) != len(args.vectors):
        raise ValueError(f"--names gives {len(names)} names for {len(args.vectors)} vector files")
    spec = CompareSpec(args.model, tuple(args.data), tuple(str(Path(v).resolve()) for v in args.vectors),
                       tuple(names), steering_choice(args), args.system_prompt, args.judge, args.limit,
                       args.max_new_tokens, args.batch_size, args.allow_overlap, plots=not args.no_plots)
    data = {name: load_dataset(name) for name in args.data}
    vlm = load_vlm(args.model, args.device, args.dtype, args.trust_remote_code)
    table, paths = run_compare_job(spec, args.out, vlm, data, scorers(args), log=print)
    print(markdown(table))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
