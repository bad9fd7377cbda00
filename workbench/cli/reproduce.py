"""`workbench reproduce RECIPE --out DIR [--resume]`: every defence against every attack family, as one table."""

from __future__ import annotations

import argparse
import shlex

from .args import add_model_args, add_reward_args


def add_reproduce_parser(commands: argparse._SubParsersAction) -> None:
    reproduce = commands.add_parser(
        "reproduce", help="run a recipe (recipes/*.toml): every defence against every attack set, one table",
        description="Runs the recipe's attacks, defences (each seed) and evaluations, each in a run folder under "
        "DIR (a step already made with the same settings is skipped), then writes DIR/table.md, table.csv, "
        "table.json, figure.png/svg and table.ipynb (rebuilds the figure from table.json).")
    reproduce.add_argument("recipe", help="a recipe TOML file, e.g. recipes/organism.toml")
    reproduce.add_argument("--out", required=True, help="output folder (new or empty; --resume to continue one)")
    reproduce.add_argument("--resume", action="store_true", help="continue the run in --out (same recipe)")
    reproduce.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                           help="fill the recipe's ${NAME} (data paths, sizes; repeat for each)")
    reproduce.add_argument("--no-plots", action="store_true", help="skip the figure (table and notebook only)")
    add_model_args(reproduce, required=False)
    add_reward_args(reproduce)


def run_reproduce_command(args: argparse.Namespace) -> None:
    from ..core.models import load_vlm
    from ..reproduce.job import check_reproduce_out, run_reproduce_job
    from ..reproduce.recipe import load_recipe
    from .common import scorers

    variables = dict(item.split("=", 1) for item in args.var if "=" in item)
    if len(variables) != len(args.var):
        raise ValueError("--var takes NAME=VALUE, e.g. --var figstep=/data/FigStep")
    recipe = load_recipe(args.recipe, variables)
    if args.model and args.model != recipe.model:
        raise ValueError(f"--model {args.model} differs from the recipe's model {recipe.model}; edit the recipe "
                         "(the model is part of what the table means)")
    args.model = recipe.model
    check_reproduce_out(args.out, recipe, args.resume)
    vlm = load_vlm(recipe.model, args.device, args.dtype, args.trust_remote_code)
    command = "python -m workbench reproduce " + shlex.join([args.recipe, "--out", args.out,
                                                             *(f"--var={v}" for v in args.var)])
    table, paths = run_reproduce_job(recipe, args.out, vlm, scorers(args), command, plots=not args.no_plots)
    print(paths["md"].read_text(encoding="utf-8"))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
