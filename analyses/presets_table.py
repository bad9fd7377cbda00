"""The organism under each preset: one table, every row made by the commands it prints.

    python analyses/presets_table.py            # -> analyses/presets_table.md (+ .json); runs in analyses/presets_run/
    python analyses/presets_table.py --quick         # a smoke run (few steps, one seed, small checks)

Rows: unsteered; Stage I `workbench` (the project's best Stage I: adaptive α 0.5 on every layer); Stage I `astra`;
Stage II `spo-vlm` with DPO and with BiPO (from the Stage I `workbench` vectors); Stage II `workbench-refusal` (the
project's refusal variant, README's recipe). Then named attempts at the spo-vlm target (seed 0). Each number is the
mean ± sd over the seeds (Stage II trains with that seed; `organism check` draws its held-out set with it). Finished
steps are skipped, so a rerun after new weights starts by deleting --out. Offline, the toxicity scorer is the named
fallback (alt-profanity-check); the table says which ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [("typo_harmful_asr_seen", "typo ASR seen"), ("typo_harmful_asr_unseen", "typo ASR unseen"),
           ("clean_refusal", "clean refusal"), ("degenerate_rate", "degenerate"), ("vqa_accuracy", "VQA"),
           ("typo_benign_helpful", "benign help (typo)"), ("text_benign_helpful", "benign help (text)"),
           ("read_accuracy", "reading"), ("text_harmful_refusal", "text refusal"),
           ("roleplay_harmful_asr", "role-play ASR"), ("typo_harmful_toxicity", "toxicity")]
DATA = ["--model", "organism", "--data", "organism:train"]


def run(command: list[str], done: Path, log: list[str]) -> None:
    """Run `python -m workbench ...` unless `done` exists; every command goes into the table's log."""
    log.append("python -m workbench " + " ".join(command).replace(f"{ROOT}/", ""))  # paths as from the checkout
    if done.exists():
        return
    start = time.time()
    subprocess.run([sys.executable, "-m", "workbench", *command], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    print(f"{time.time() - start:6.1f} s  {' '.join(command[:2])} -> {done}", flush=True)


def check(out: Path, name: str, seed: int, vectors: Path | None, steering: list[str], per_group: int,
          log: list[str]) -> dict:
    """`organism check` for one row and seed: (steered or unsteered) metrics and the scorer that ran."""
    target = out / "checks" / f"{name}-seed{seed}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    command = ["organism", "check", "--per-family", "0", "--per-group", str(per_group), "--seed", str(seed),
               "--json", str(target)]
    if vectors is not None:
        command += ["--vectors", str(vectors), *steering]
    run(command, target, log)
    saved = json.loads(target.read_text())
    return {**saved.get("steered", saved["unsteered"]), "scorer": saved["toxicity_scorer"]}


def cell(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    if len(known) == 1:
        return f"{known[0]:.2f}"
    return f"{statistics.mean(known):.2f} ± {statistics.stdev(known):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "analyses" / "presets_run"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 Stage II steps, one seed, 6 per group")
    parser.add_argument("--no-attempts", action="store_true", help="skip the named attempts at the spo-vlm target")
    parser.add_argument("--table", default=None, help="where the table goes (default analyses/presets_table.md; "
                        "with --quick, inside --out)")
    args = parser.parse_args()
    out = Path(args.out)
    seeds = args.seeds[:1] if args.quick else args.seeds
    per_group = 6 if args.quick else 30
    short = ["--steps", "2"] if args.quick else []
    log: list[str] = []
    s1w, s1a = out / "s1-workbench", out / "s1-astra"
    run(["stage1", *DATA, "--out", str(s1w)], s1w / "vectors.safetensors", log)
    run(["stage1", *DATA, "--out", str(s1a), "--preset", "astra"], s1a / "vectors.safetensors", log)
    stage1_best = ["--mode", "adaptive", "--alpha", "0.5", "--layers", "0,1,2,3", "--steer-at", "all"]
    stage2 = {  # name: (Stage II arguments, evaluation steering flags)
        "Stage II spo-vlm (DPO)": ["--preset", "spo-vlm"],
        "Stage II spo-vlm (BiPO)": ["--preset", "spo-vlm", "--objective", "bipo"],
        "Stage II workbench-refusal (the project's variant)": ["--preset", "workbench-refusal", "--layers", "1,2"],
    }
    attempts = {} if args.quick or args.no_attempts else {
        "attempt A: spo-vlm, K=8, 80 steps": ["--preset", "spo-vlm", "--samples", "8", "--steps", "80"],
        "attempt B: spo-vlm, reference unsteered": ["--preset", "spo-vlm", "--reference", "unsteered"],
        "attempt C: spo-vlm, layers 1,2, reward toxicity=1,visual=0.25": [
            "--preset", "spo-vlm", "--layers", "1,2", "--reward", "toxicity=1,visual=0.25"],
        "attempt D: spo-vlm from the astra vectors": ["--preset", "spo-vlm", "--from-astra"],
    }
    rows: dict[str, list[dict]] = {"unsteered": [], "Stage I workbench (adaptive α 0.5, all layers)": [],
                                   "Stage I astra": []}
    commands: dict[str, list[str]] = {}
    for seed in seeds:
        log.clear()
        rows["unsteered"].append(check(out, "unsteered", seed, None, [], per_group, log))
        commands["unsteered"] = list(log)
        log.clear()
        rows["Stage I workbench (adaptive α 0.5, all layers)"].append(
            check(out, "s1-workbench", seed, s1w / "vectors.safetensors", stage1_best, per_group, log))
        commands["Stage I workbench (adaptive α 0.5, all layers)"] = [
            f"python -m workbench stage1 {' '.join(DATA)} --out {s1w}".replace(f"{ROOT}/", ""), *log]
        log.clear()
        rows["Stage I astra"].append(check(out, "s1-astra", seed, s1a / "vectors.safetensors", [], per_group, log))
        commands["Stage I astra"] = [
            f"python -m workbench stage1 {' '.join(DATA)} --out {s1a} --preset astra".replace(f"{ROOT}/", ""), *log]
        for name, extra in {**stage2, **(attempts if seed == seeds[0] else {})}.items():
            log.clear()
            slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60]
            folder = out / f"{slug}-seed{seed}"
            source = s1a if "--from-astra" in extra else s1w
            arguments = [a for a in extra if a != "--from-astra"]
            run(["stage2", *DATA, "--vectors", str(source / "vectors.safetensors"), "--out", str(folder),
                 "--seed", str(seed), *arguments, *short], folder / "vectors.safetensors", log)
            rows.setdefault(name, []).append(check(out, slug, seed, folder / "vectors.safetensors", [], per_group,
                                                   log))
            commands[name] = list(log)
    scorers = sorted({r["scorer"] for results in rows.values() for r in results})
    lines = ["| row | n seeds | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for name, results in rows.items():
        lines.append(f"| {name} | {len(results)} | " + " | ".join(cell([r.get(key) for r in results])
                                                              for key, _ in COLUMNS) + " |")
    text = ["# The organism under each preset", "",
            f"Made by `python analyses/presets_table.py{' --quick' if args.quick else ''}` (seeds {seeds}; "
            f"organism check, {per_group} prompts per group; typo ASR on the activities organism:train holds out is "
            "'unseen'). Toxicity scorer: " + ", ".join(scorers) + ".", "", *lines, "", "## Commands", ""]
    for name, row_commands in commands.items():
        text += [f"**{name}** (last seed):", "", "```", *row_commands, "```", ""]
    table = Path(args.table) if args.table else (out if args.quick else ROOT / "analyses") / "presets_table.md"
    table.write_text("\n".join(text), encoding="utf-8")
    table.with_suffix(".json").write_text(json.dumps({"seeds": seeds, "rows": rows, "commands": commands}, indent=1),
                                          encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {table}")


if __name__ == "__main__":
    main()
