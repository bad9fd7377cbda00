"""Command line: `workbench {stage1,steer,stage2,eval,gguf,notebook,organism} ...` (or python -m workbench)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..evaluate.evaluation import EvalConfig
from ..evaluate.judges import TOXICITY_JUDGES
from ..stage1.activations import POSITIONS
from ..stage1.directions import METHODS
from ..stage1.presets import PRESETS as STAGE1_PRESETS
from ..stage2.loop import REFERENCES, Stage2Config
from ..stage2.objectives import ADVANTAGE_NORMS, OBJECTIVES, PAIRINGS
from ..stage2.presets import PRESETS as STAGE2_PRESETS
from .args import add_model_args, add_reward_args, add_steering_args, signs_text
from .attack import add_attack_parser, run_attack_command
from .common import scorers, steering_choice
from .compare import add_compare_parser, run_compare_command
from .reproduce import add_reproduce_parser, run_reproduce_command

S2 = Stage2Config()  # the CLI's Stage II defaults are the library's
EVAL = EvalConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="VLM steering workbench (SPO-VLM)")
    commands = parser.add_subparsers(dest="command", required=True)

    stage1 = commands.add_parser("stage1", help="capture activations and compute per-layer steering directions",
                                 description="Writes DIR/activations.safetensors, DIR/vectors.safetensors (+ .json) "
                                 "and DIR/layer_scores.csv. Directions point from benign to harmful.")
    add_model_args(stage1)
    stage1.add_argument("--data", required=True, help="dataset: .jsonl or .csv (prompt, label, image, source)")
    stage1.add_argument("--out", required=True, help="output folder (a new or empty one, or --overwrite)")
    stage1.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    stage1.add_argument("--position", default="last", choices=POSITIONS, help="which token(s) to record")
    stage1.add_argument("--method", default="mean_diff", choices=METHODS, help="direction per layer")
    stage1.add_argument("--batch-size", type=int, default=8)
    stage1.add_argument("--preset", default="workbench", choices=list(STAGE1_PRESETS),
                        help="; ".join(f"{p.name}: {p.summary}" for p in STAGE1_PRESETS.values())
                        + " (default workbench)")
    stage1.add_argument("--judge", default="auto", metavar="JUDGE",
                        help="astra: the ASR judge its α sweep reads (auto: the organism's ground truth on organism "
                        "data, else the keyword judge; see eval --judge)")

    steer = commands.add_parser(
        "steer", help="print unsteered and steered generations side by side",
        description=signs_text() + " The unsteered run has no intervention attached.")
    add_model_args(steer)
    steer.add_argument("--vectors", required=True, help="vectors.safetensors from stage1 or stage2")
    steer.add_argument("--prompt", required=True)
    steer.add_argument("--image", default=None, help="optional image file")
    add_steering_args(steer)
    steer.add_argument("--max-new-tokens", type=int, default=EVAL.max_new_tokens)
    steer.add_argument("--sample", action="store_true", help="sample (temperature) instead of greedy decoding")
    steer.add_argument("--temperature", type=float, default=0.7)
    steer.add_argument("--seed", type=int, default=0)
    stage2 = commands.add_parser(
        "stage2", help="refine steering vectors by preference optimisation (the VLM stays frozen)",
        description="Samples K responses per prompt under the current steering, rewards them, and optimises a "
        "sequence-level preference objective on the steering vectors only. --preset picks the recipe: "
        + "; ".join(f"{p.name}: {p.summary}" for p in STAGE2_PRESETS.values())
        + ". Settings given explicitly override the preset; steering settings not given come from the vector. "
        "Writes DIR/config.json, metrics.jsonl, checkpoint.safetensors and vectors.safetensors.")
    add_model_args(stage2)
    stage2.add_argument("--vectors", required=True, help="Stage I vectors.safetensors")
    stage2.add_argument("--data", required=True, help="dataset (.jsonl/.csv or organism:train)")
    stage2.add_argument("--out", required=True, help="run folder")
    stage2.add_argument("--preset", default="workbench", choices=list(STAGE2_PRESETS),
                        help="the recipe (default workbench, the project's own settings; spo-vlm is the paper's)")
    stage2.add_argument("--steps", type=int, default=None,
                        help=f"optimiser steps (default {S2.steps}, or the preset's)")
    stage2.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    stage2.add_argument("--samples", type=int, default=S2.samples_per_prompt, help="responses sampled per prompt (K)")
    stage2.add_argument("--prompts-per-step", type=int, default=S2.prompts_per_step)
    stage2.add_argument("--objective", default=None, choices=list(OBJECTIVES),
                        help=f"default {S2.objective}, or the preset's; bipo: BiPO's random-sign pairs against the "
                        "unsteered model")
    stage2.add_argument("--reward", default=None, metavar="TERM=W,...",
                        help="reward weights, every term not named at 0, e.g. toxicity=1,visual=0.5 (default: the "
                        "preset's; workbench: " + ",".join(f"{k}={v:g}" for k, v in S2.weights.items()) + ")")
    stage2.add_argument("--kl", type=float, default=None, help="grpo: weight of the KL anchor to the reference "
                        f"(default {S2.kl:g})")
    stage2.add_argument("--advantage-norm", default=S2.advantage_norm, choices=ADVANTAGE_NORMS,
                        help="grpo: reward minus the prompt's group mean (none), or also divided by its spread (std)")
    stage2.add_argument("--pairing", default=S2.pairing, choices=PAIRINGS,
                        help="DPO pairs per prompt: best vs worst sample, or best vs every clearly worse sample")
    stage2.add_argument("--safe-response", default=None, metavar="TEXT",
                        help="off-policy safe reply put in place of one of the K samples of every harmful prompt, "
                        "e.g. the model's own refusal (organism: 'sorry , i cannot help with that .'); "
                        "off unless the preset is workbench-refusal (strictly on-policy)")
    stage2.add_argument("--reference", default=None, choices=REFERENCES,
                        help="DPO/KL reference: the Stage I steering (frozen copy, default) or the unsteered model")
    add_steering_args(stage2)
    stage2.add_argument("--lr", type=float, default=S2.learning_rate)
    stage2.add_argument("--beta", type=float, default=S2.beta)
    stage2.add_argument("--temperature", type=float, default=S2.temperature)
    stage2.add_argument("--max-new-tokens", type=int, default=S2.max_new_tokens)
    stage2.add_argument("--fixed-strength", action="store_true", help="train directions only, not per-layer strengths")
    add_reward_args(stage2)
    stage2.add_argument("--seed", type=int, default=S2.seed)

    evaluation = commands.add_parser(
        "eval", help="evaluate unsteered vs steered on a dataset: ASR, toxicity, refusal, benign accuracy",
        description="Writes DIR/metrics.json (per source and overall, bootstrap 95%% intervals, both conditions), "
        "DIR/generations.jsonl, DIR/report.md and DIR/figures/. Without --vectors only the unsteered model is "
        "evaluated.")
    add_model_args(evaluation)
    evaluation.add_argument("--vectors", default=None, help="vectors.safetensors (Stage I or II)")
    evaluation.add_argument("--data", required=True, help="dataset: .jsonl/.csv, organism:test, or a benchmark "
                            "name such as advbench or xstest:/path/to/copy")
    evaluation.add_argument("--out", required=True, help="output folder (a new or empty one, or --overwrite)")
    evaluation.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    evaluation.add_argument("--resume", action="store_true",
                            help="continue an interrupted evaluation in --out (same settings; finished records kept)")
    add_steering_args(evaluation)
    evaluation.add_argument("--max-new-tokens", type=int, default=EVAL.max_new_tokens)
    evaluation.add_argument("--batch-size", default="auto",
                            help="prompts per generation batch; auto (default) sizes it to the device")
    evaluation.add_argument("--limit", type=int, default=None,
                            help="evaluate N records: a seeded sample stratified by label, source and "
                            "behaviour")
    evaluation.add_argument("--no-plots", action="store_true", help="skip PNG/SVG figures (no browser needed)")
    evaluation.add_argument("--judge", default="auto", metavar="JUDGE",
                            help="who decides attack success: auto (the organism's ground truth on organism data, "
                            "else the keyword judge unless the vectors were trained on it), organism, keyword, "
                            "harmbench[:MODEL], classifier:MODEL[@UNSAFE_LABEL], or A|B (B if A cannot load)")
    evaluation.add_argument("--harmbench", default=None, metavar="MODEL",
                            help="shorthand for --judge harmbench:MODEL (e.g. cais/HarmBench-Llama-2-13b-cls)")
    evaluation.add_argument("--toxicity-judge", default="auto", choices=TOXICITY_JUDGES,
                            help="an independent toxicity judge beside the toxicity scorer (auto: the organism's "
                            "planted insults on organism data, none elsewhere)")
    evaluation.add_argument("--allow-overlap", action="store_true",
                            help="evaluate even on records the vectors were trained on (the overlap is reported)")
    add_reward_args(evaluation)

    gguf = commands.add_parser(
        "gguf", help="write a llama.cpp control vector (use with --control-vector FILE)",
        description="llama.cpp adds the file's vector as is, so the file holds the strength: additive steering is "
        "exported exactly (alpha x unit direction per layer, a negative alpha defends); adaptive only as a labelled "
        "approximation (--approximate: -alpha x |benign mean| x unit direction); ablation cannot be exported.")
    gguf.add_argument("--vectors", required=True, help="vectors.safetensors (Stage I or II)")
    gguf.add_argument("--out", required=True, help="the .gguf file to write")
    gguf.add_argument("--alpha", type=float, required=True, help="strength written into the file")
    gguf.add_argument("--mode", default="additive", choices=["additive", "adaptive"])
    gguf.add_argument("--approximate", action="store_true", help="allow adaptive's constant approximation")

    notebook = commands.add_parser("notebook", help="export a runnable analysis notebook for a run folder",
                                   description="The notebook reproduces the run through library calls: load, "
                                   "capture, directions, plots, steering examples, metrics.")
    notebook.add_argument("--run", required=True, help="a Stage I or eval output folder")
    notebook.add_argument("--out", required=True, help="notebook path (.ipynb)")
    notebook.add_argument("--execute", action="store_true", help="run it headless and keep the outputs")
    notebook.add_argument("--timeout", type=int, default=600, help="seconds per cell when executing")

    add_compare_parser(commands)
    add_attack_parser(commands)
    add_reproduce_parser(commands)
    judges = commands.add_parser("judge-check", help="precision and recall of the keyword refusal judge on its "
                                 "committed adversarial set (workbench/evaluate/judge_sets/keyword_adversarial.jsonl)")
    judges.add_argument("--set", default=None, help="another labelled JSONL (response, refused, category)")
    organism = commands.add_parser("organism", help="the model organism: train it or check its planted behaviours")
    organism_commands = organism.add_subparsers(dest="organism_command", required=True)
    from .organism import add_check_args

    add_check_args(organism_commands.add_parser("check", help="evaluate planted behaviours on held-out prompts"))
    return parser


def run_stage2_command(args: argparse.Namespace) -> None:
    from ..core.distributed import current_shard, local_device
    from ..core.jobs import check_out
    from ..core.models import load_vlm
    from ..data.sources import load_dataset
    from ..stage2.job import Stage2Spec, run_stage2_job

    shard = current_shard()
    if shard.is_main:
        check_out(args.out, "stage2", overwrite=False, resume=args.resume)
    from ..stage2.presets import parse_reward_weights, stage2_config
    from ..steer.vectors import SteeringVector

    given = dict(steps=args.steps, prompts_per_step=args.prompts_per_step, samples_per_prompt=args.samples,
                 temperature=args.temperature, max_new_tokens=args.max_new_tokens, beta=args.beta,
                 learning_rate=args.lr, objective=args.objective, pairing=args.pairing,
                 safe_response=args.safe_response or None, reference=args.reference, kl=args.kl,
                 advantage_norm=args.advantage_norm, mode=args.mode, alpha=args.alpha, layers=args.layers,
                 steer_at=args.steer_at, train_strength=not args.fixed_strength, seed=args.seed,
                 weights=parse_reward_weights(args.reward) if args.reward else None)
    config, note = stage2_config(args.preset, SteeringVector.load(args.vectors), given, args.model)
    if shard.is_main:
        print(f"preset {config.preset}: {note}; reward weights "
              + ", ".join(f"{k} {v:g}" for k, v in config.weights.items()))
    spec = Stage2Spec(args.model, args.data, str(Path(args.vectors).resolve()), config)
    records = load_dataset(args.data)
    vlm = load_vlm(args.model, local_device(args.device), args.dtype, args.trust_remote_code)
    loaded = scorers(args)
    print(f"device: {vlm.input_device}, dtype: {vlm.dtype}")
    shard.barrier()  # rank 0 checked --out before any rank opens the run
    run_stage2_job(spec, args.out, vlm, records, loaded, args.resume, shard=shard,
                   on_step=lambda m: print(f"step {m.step}: loss {m.loss:.4f} reward {m.reward:.3f} "  # rank 0 only
                                           f"toxicity {m.toxicity:.3f} refusal {m.refusal_rate:.2f} pairs {m.pairs}"))
    if shard.is_main:
        print(f"wrote {Path(args.out) / 'vectors.safetensors'}")


def run_eval_command(args: argparse.Namespace) -> None:
    from ..core.distributed import current_shard, local_device
    from ..core.jobs import check_out
    from ..core.models import load_vlm
    from ..data.sources import load_dataset
    from ..evaluate.answers import shares_table
    from ..evaluate.job import EvalSpec, run_eval_job
    from ..evaluate.report import metrics_table

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    shard = current_shard()
    if shard.is_main:
        check_out(args.out, "eval", args.overwrite, args.resume)
    spec = EvalSpec(args.model, args.data, vectors=args.vectors and str(Path(args.vectors).resolve()),
                    steering=steering_choice(args),
                    judge=f"harmbench:{args.harmbench}" if args.harmbench else args.judge,
                    limit=args.limit, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                    allow_overlap=args.allow_overlap, plots=not args.no_plots, toxicity_judge=args.toxicity_judge)
    records = load_dataset(args.data)
    vlm = load_vlm(args.model, local_device(args.device), args.dtype, args.trust_remote_code)
    done = run_eval_job(spec, args.out, vlm, records, scorers(args), args.resume, shard=shard, log=print)
    if done.metrics is None:  # another rank of a torchrun: rank 0 reports
        return
    print(metrics_table(done.metrics))
    answers = shares_table(done.metrics)
    if answers:
        print("\nWhat the answers to harmful prompts are:\n" + answers)
    for name in ("metrics", "generations", "report"):
        print(f"wrote {name}: {done.paths[name]}")


def run_gguf_command(args: argparse.Namespace) -> None:
    from ..steer.vectors import SteeringVector

    if Path(args.out).suffix.lower() != ".gguf":
        raise ValueError(f"--out must name a .gguf file, got {args.out}")
    note = SteeringVector.load(args.vectors).to_gguf(args.out, args.alpha, args.mode, args.approximate)
    print(f"wrote {args.out}: {note}")


def run_notebook_command(args: argparse.Namespace) -> None:
    from ..export.notebook import build_notebook, execute_notebook, write_notebook

    notebook = build_notebook(args.run, Path(args.out).parent)
    if args.execute:
        from nbclient.exceptions import CellExecutionError

        try:
            notebook = execute_notebook(notebook, Path(args.out).parent, args.timeout)
        except CellExecutionError as error:
            write_notebook(notebook, args.out)  # keep what ran, with the failing cell's traceback, to inspect
            raise ValueError(f"the notebook failed while executing (saved with its outputs in {args.out}): "
                             f"{str(error).strip().splitlines()[-1]}") from None
    write_notebook(notebook, args.out)
    print(f"wrote {args.out}" + (" (executed)" if args.execute else ""))


def run_judge_check_command(args: argparse.Namespace) -> None:
    from ..evaluate.judges import keyword_judge_quality

    quality = keyword_judge_quality(args.set)
    print(f"keyword refusal judge on {quality['set']} (n={quality['n']}; positive class: refused): "
          f"precision {quality['precision']}, recall {quality['recall']}, accuracy {quality['accuracy']}")
    for name, row in quality["per_category"].items():
        print(f"  {name:<24} n={row['n']:<3} accuracy {row['accuracy']}")


def run_organism_command(args: argparse.Namespace) -> None:
    from .organism import check_command

    check_command(args)


def run_stage1_command(args: argparse.Namespace) -> None:
    from ..core.distributed import current_shard, local_device
    from ..core.jobs import check_out
    from ..core.models import load_vlm
    from ..data.sources import load_dataset
    from ..evaluate.alpha import run_stage1_preset_job
    from ..evaluate.judges import choose_judge
    from ..stage1.job import Stage1Spec, run_stage1_job

    shard = current_shard()
    if shard.is_main:
        check_out(args.out, "stage1", args.overwrite)
    spec = Stage1Spec(args.model, args.data, args.position, args.method, args.batch_size, args.preset)
    records = load_dataset(args.data)
    vlm = load_vlm(args.model, local_device(args.device), args.dtype, args.trust_remote_code)
    if STAGE1_PRESETS[args.preset].sweep_alpha:
        if shard.world > 1:
            raise SystemExit("the astra preset runs in one process (its attribution and α sweep are not sharded)")
        result, paths = run_stage1_preset_job(spec, args.out, vlm, records, choose_judge(args.judge, args.data))
    else:
        result, paths = run_stage1_job(spec, args.out, vlm, records, shard=shard)
    if not shard.is_main:
        return
    print(result.scores_csv())
    print(f"layers: {result.verdict()}")
    recorded = result.vector.metadata.get("steering")
    if recorded:
        print(f"preset {args.preset}: steering recorded in the vector: " + ", ".join(f"{k} {v}" for k, v in
                                                                                   recorded.items()))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")


def run_steer_command(args: argparse.Namespace) -> None:
    from ..core.models import load_vlm
    from ..core.records import open_image
    from ..steer.steering import compare, steering_for
    from ..steer.vectors import SteeringVector

    vector = SteeringVector.load(args.vectors)
    image = open_image(args.image) if args.image else None
    vlm = load_vlm(args.model, args.device, args.dtype, args.trust_remote_code)
    vector.check_compatible(vlm)
    made_for = vector.metadata.get("model")
    if made_for and made_for != vlm.spec:
        print(f"warning: the vector was made for {made_for}, the model is {vlm.spec}", file=sys.stderr)
    steering, note = steering_for(vector, args.mode, args.alpha, args.layers, args.steer_at)
    result = compare(vlm, [(image, args.prompt)], steering, max_new_tokens=args.max_new_tokens,
                     do_sample=args.sample, temperature=args.temperature, seed=args.seed)[0]
    width = 60
    print(f"{'UNSTEERED':<{width}} | STEERED ({steering.mode}, alpha={steering.alpha}, "
          f"layers={steering.active_layers})")
    print("-" * width + "-+-" + "-" * width)
    left, right = _wrap(result.unsteered, width), _wrap(result.steered, width)
    for i in range(max(len(left), len(right))):
        print(f"{(left[i] if i < len(left) else ''):<{width}} | {right[i] if i < len(right) else ''}")
    print(note)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


DATA_PARALLEL = ("eval", "stage1", "stage2")  # the commands that shard their work under torchrun


def refuse_unsharded(command: str) -> None:
    """Under torchrun every process would run a command that does not shard, each writing the same files."""
    from ..core.distributed import launched_world

    if launched_world() > 1 and command not in DATA_PARALLEL:
        raise ValueError(f"{command} does not run data-parallel; launch it with `python -m workbench {command}`, "
                         f"not torchrun (which runs in parallel: {', '.join(DATA_PARALLEL)})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"stage1": run_stage1_command, "steer": run_steer_command, "stage2": run_stage2_command,
                "organism": run_organism_command, "judge-check": run_judge_check_command,
                "compare": run_compare_command, "attack": run_attack_command, "reproduce": run_reproduce_command,
                "eval": run_eval_command, "notebook": run_notebook_command, "gguf": run_gguf_command}
    try:
        refuse_unsharded(args.command)
        handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; the same command with --resume continues (finished steps are kept)"
              if args.command == "reproduce" else
              "interrupted; a Stage II run resumes from its last checkpoint with --resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
