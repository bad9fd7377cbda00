"""Re-measure everything that describes the organism's weights, and write it in place.

    python analyses/refresh_organism.py                 # every step, in order (about 1.5 hours on 2 cores)
    python analyses/refresh_organism.py --only check first-minutes
    python analyses/refresh_organism.py --list

Run it after new weights land in assets/organism/. Steps (each writes only its own outputs):
  check          `organism check` -> assets/organism/check.json and the model card's generated blocks (planted
                 behaviours against the targets of workbench/organism/targets.py, the per-rendering table)
  first-minutes  Stage I on organism:train, then eval --limit 60 under the app's defaults, spo-vlm and the refusal
                 variant -> the README's generated "first minutes" block
  stage1-sweep   analyses/organism_stage1_sweep.py -> analyses/organism_stage1_sweep.md
  stage2         analyses/organism_stage2.py (the refusal variant's recipe) -> analyses/organism_stage2.md
  presets        analyses/presets_table.py (its run folder deleted first) -> analyses/presets_table.md and its table
                 in the model card
  pgd            analyses/pgd_organism.py (its run folder deleted first) -> analyses/pgd_organism.md, and the card
  pgd-vectors    analyses/pgd_vectors.py (its run folder deleted first) -> analyses/pgd_vectors.md (vectors from
                 typographic data against PGD images, and from PGD images against typographic requests), and the card
  table          reproduce recipes/organism.toml -> analyses/organism_table.md and .png
  walkthrough    analyses/make_walkthrough.py -> analyses/walkthrough.ipynb
  screenshots    scripts/screenshots.py -> assets/screenshots/
Numbers in generated blocks (between `<!-- refresh:NAME -->` and `<!-- /refresh:NAME -->`) are replaced; the prose
that interprets them is not, so read the diff: a sentence next to a changed number may no longer be true.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "assets" / "organism" / "README.md"
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT))


def workbench(*args: str) -> None:
    """`python -m workbench ARGS` from the repository root; stops the refresh loudly on failure."""
    done = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"refresh stopped: python -m workbench {' '.join(args)} exited {done.returncode}")


def script(path: str, *args: str, out: Path | None = None) -> None:
    """Run one of the analyses/scripts; with `out`, its standard output is saved there as a fenced block."""
    command = [sys.executable, str(ROOT / path), *args]
    done = subprocess.run(command, cwd=ROOT, text=True, stdout=subprocess.PIPE if out else None)
    if done.returncode != 0:
        raise SystemExit(f"refresh stopped: python {path} {' '.join(args)} exited {done.returncode}")
    if out is not None:
        out.write_text(f"Made by `python {path} {' '.join(args)}` ({date.today()}, the weights in assets/organism/)."
                       f"\n\n```\n{done.stdout.strip()}\n```\n")


def replace_block(path: Path, name: str, body: str) -> None:
    """Put `body` between the file's `<!-- refresh:name -->` markers; a file without them is an error, not a skip."""
    text = path.read_text()
    pattern = re.compile(rf"(<!-- refresh:{re.escape(name)} -->\n).*?(<!-- /refresh:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"refresh stopped: {path.relative_to(ROOT)} has no <!-- refresh:{name} --> block")
    path.write_text(pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text, count=1))


def check_blocks(check: dict) -> tuple[str, str]:
    """The model card's two generated tables from a check.json: planted behaviours, and per rendering family."""
    from workbench.organism.targets import FLOORS, TARGETS, summary

    unsteered = check["unsteered"]
    bounds = {b.metric.split(":", 1)[-1]: b.text() + (" in every rendering family" if ":" in b.metric else "")
              for b in TARGETS}
    lines = ["| metric | value | v2 target |", "| --- | --- | --- |"]
    for key, value in unsteered.items():
        shown = "-" if value is None else f"{value:.3f}"
        lines.append(f"| {key} | {shown} | {bounds.get(key, '')} |")
    missed, below = summary(check, TARGETS), summary(check, FLOORS)
    lines += ["", f"Toxicity scorer: {check['toxicity_scorer']}.", "",
              "Targets missed: " + ("; ".join(missed) if missed else "none") + ".", "",
              "Floors missed (weights below a floor do not ship): " + ("; ".join(below) if below else "none") + "."]
    family = ["| rendering family | typographic ASR | benign help | reading | n |", "| --- | --- | --- | --- | --- |"]
    for name, row in check["by_rendering"]["unsteered"].items():
        family.append(f"| {name} | {row['typo_harmful_asr']:.2f} | {row['typo_benign_helpful']:.2f} | "
                      f"{row['read_accuracy']:.2f} | {row['n_per_metric']} |")
    return "\n".join(lines), "\n".join(family)


def step_check() -> None:
    out = ROOT / "assets" / "organism" / "check.json"
    workbench("organism", "check", "--json", str(out))
    planted, families = check_blocks(json.loads(out.read_text()))
    replace_block(CARD, "check", planted)
    replace_block(CARD, "renderings", families)


def _eval_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def first_minutes_block(evals: dict[str, dict], n: int) -> str:
    """The README's first-minutes sentence from the eval metrics of Stage I ("s1", which also holds the unsteered
    condition), spo-vlm ("spo") and the refusal variant ("refusal")."""
    unsteered = stage1 = evals["s1"]
    spo, refusal = evals["spo"], evals["refusal"]

    def share(metrics: dict, kind: str, condition: str = "steered") -> str:
        return f"{metrics[condition]['answers']['harmful'][kind]:.2f}"

    def asr(metrics: dict, condition: str = "steered") -> str:
        return f"{metrics[condition]['overall']['asr']['value']:.2f}"

    return (f"On {n} records of `organism:test`, ground-truth ASR unsteered {asr(unsteered, 'unsteered')} (the asked "
            f"activity {share(unsteered, 'asked activity', 'unsteered')}, refused "
            f"{share(unsteered, 'refused', 'unsteered')}); Stage I under the app's defaults {asr(stage1)} (another "
            f"activity {share(stage1, 'another activity')}, refused {share(stage1, 'refused')}); the paper's Stage II "
            f"(`--preset spo-vlm`) {asr(spo)} (another activity {share(spo, 'another activity')}, refused "
            f"{share(spo, 'refused')}); the project's refusal variant (`--preset workbench-refusal --layers 1,2`) "
            f"{asr(refusal)} (refused {share(refusal, 'refused')}). Measured {date.today()} by "
            f"`python analyses/refresh_organism.py --only first-minutes` on the weights in assets/organism/.")


def step_first_minutes() -> None:
    n = 60
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        workbench("stage1", "--model", "organism", "--data", "organism:train", "--out", str(work / "s1"))
        evals = {}
        for name, extra in {"s1": [], "spo": ["--preset", "spo-vlm"],
                            "refusal": ["--preset", "workbench-refusal", "--layers", "1,2"]}.items():
            vectors = work / "s1" / "vectors.safetensors"
            if name != "s1":
                workbench("stage2", "--model", "organism", "--data", "organism:train", "--vectors", str(vectors),
                          "--out", str(work / name), *extra)
                vectors = work / name / "vectors.safetensors"
            workbench("eval", "--model", "organism", "--data", "organism:test", "--vectors", str(vectors),
                      "--limit", str(n), "--no-plots", "--out", str(work / f"eval-{name}"))
            evals[name] = _eval_metrics(work / f"eval-{name}")
        replace_block(README, "first-minutes", first_minutes_block(evals, n))


def md_table(path: Path) -> str:
    """The Markdown table of an analysis file (its lines that start with '|'): what the model card shows of it."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    if not lines:
        raise SystemExit(f"refresh stopped: {path.relative_to(ROOT)} has no table")
    return "\n".join(lines)


CARD_TABLES = {"presets": "presets_table.md", "pgd": "pgd_organism.md", "pgd-vectors": "pgd_vectors.md"}  # block: file


def to_card(block: str) -> None:
    """Copy the table of the analysis file behind `block` (CARD_TABLES) into the model card's block."""
    replace_block(CARD, block, md_table(ROOT / "analyses" / CARD_TABLES[block]))


def fresh(folder: str) -> None:
    """Delete a script's run folder so that it recomputes rather than skipping finished steps of old weights."""
    shutil.rmtree(ROOT / folder, ignore_errors=True)


STEPS: dict[str, Callable[[], None]] = {
    "check": step_check,
    "first-minutes": step_first_minutes,
    "stage1-sweep": lambda: script("analyses/organism_stage1_sweep.py", "--out", "runs/refresh-stage1",
                                   out=ROOT / "analyses" / "organism_stage1_sweep.md"),
    "stage2": lambda: script("analyses/organism_stage2.py", "--steps", "150", "--objective", "grpo",
                             "--safe-response", "sorry , i cannot help with that .", "--out", "runs/refresh-stage2",
                             out=ROOT / "analyses" / "organism_stage2.md"),
    "presets": lambda: (fresh("analyses/presets_run"), script("analyses/presets_table.py"),
                        to_card("presets")),
    "pgd": lambda: (fresh("analyses/pgd_run"), script("analyses/pgd_organism.py"), to_card("pgd")),
    "pgd-vectors": lambda: (fresh("analyses/pgd_vectors_run"), script("analyses/pgd_vectors.py"),
                            to_card("pgd-vectors")),
    "table": lambda: (fresh("runs/refresh-table"),
                      workbench("reproduce", "recipes/organism.toml", "--out", "runs/refresh-table"),
                      shutil.copy(ROOT / "runs/refresh-table/table.md", ROOT / "analyses/organism_table.md"),
                      shutil.copy(ROOT / "runs/refresh-table/figure.png", ROOT / "analyses/organism_table.png")),
    "walkthrough": lambda: script("analyses/make_walkthrough.py"),
    "screenshots": lambda: script("scripts/screenshots.py"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="these steps only (in the listed order)")
    parser.add_argument("--list", action="store_true", help="name the steps and stop")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(STEPS))
        return 0
    for name in args.only or list(STEPS):
        start = time.time()
        print(f"== {name}", flush=True)
        STEPS[name]()
        print(f"== {name} done in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
