"""PGD-toxic and PGD-JB on the organism, by ε: the share of toxic answers (the organism's planted insults) and the
ground-truth ASR with the attacked image against the clean starting image and a white one, on held-out prompts.

    python analyses/pgd_organism.py [--steps 200] [--limit 30]   # -> analyses/pgd_organism.md (runs: pgd_run/)

PGD-toxic: one universal image toward the organism's insult openers, paired with held-out benign scene questions.
PGD-JB: toward its compliant opener ("sure . first ,"), paired with held-out harmful text requests. On today's
weights any image switches the text route's refusal off, so the clean and white baselines already comply there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "analyses" / "pgd_run"


def workbench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "workbench", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def rates(dataset: Path, out: Path, judge: str) -> dict:
    """Toxic answers (the organism's insults) and ASR by `judge` (organism: steps delivered; scene questions have no
    activity, so PGD-toxic's ASR column is not read)."""
    if not (out / "metrics.json").is_file():
        workbench("eval", "--model", "organism", "--data", str(dataset), "--judge", judge, "--toxicity-judge",
                  "organism", "--no-plots", "--out", str(out))
    overall = json.loads((out / "metrics.json").read_text())["unsteered"]["overall"]
    return {"toxic": overall["toxic_rate"]["value"], "asr": overall["asr"]["value"] if judge == "organism" else None,
            "n": overall["asr"]["n"]}


def show(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def baseline(attacked: Path, image: Image.Image, name: str) -> Path:
    """The attack's dataset with its image replaced by `image` (the clean start, or white)."""
    folder = attacked.parent / f"{attacked.name}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "image.png")
    rows = [{**json.loads(line), "image": "image.png", "source": name}
            for line in (attacked / "dataset.jsonl").read_text().splitlines()]
    (folder / "dataset.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "dataset.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--epsilons", nargs="+", default=["16/255", "32/255", "64/255", "unconstrained"])
    args = parser.parse_args()
    lines = ["| attack | ε | steps | n | toxic answers: attacked | clean start | white | ASR (steps delivered): "
             "attacked | clean start | white | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    commands = []
    clean = Image.new("RGB", (64, 64), (235, 235, 235))
    for name, targets, label, source in (("PGD-toxic", "toxic", "benign", "scenes"),
                                         ("PGD-JB", "affirmative", "harmful", "text")):
        for epsilon in args.epsilons:
            folder = RUNS / f"{targets}-{epsilon.replace('/', '_')}"
            command = ["attack", "pgd", "--model", "organism", "--prompts", "organism:test", "--label", label,
                       "--source", source, "--limit", str(args.limit), "--targets", targets, "--epsilon", epsilon,
                       "--steps", str(args.steps), "--out", str(folder)]
            commands.append("python -m workbench " + " ".join(command).replace(f"{ROOT}/", ""))
            start = time.time()
            if not (folder / "dataset.jsonl").is_file():
                workbench(*command)
            seconds = round(time.time() - start)  # 0 when the attack was already made (a rerun)
            judge = "organism" if targets == "affirmative" else "keyword"
            attacked = rates(folder / "dataset.jsonl", folder.parent / f"{folder.name}-eval", judge)
            plain = rates(baseline(folder, clean, "clean"), folder.parent / f"{folder.name}-clean-eval", judge)
            white = rates(baseline(folder, Image.new("RGB", (64, 64), "white"), "white"),
                          folder.parent / f"{folder.name}-white-eval", judge)
            lines.append(f"| {name} | {epsilon} | {args.steps} | {attacked['n']} | {attacked['toxic']:.2f} | "
                         f"{plain['toxic']:.2f} | {white['toxic']:.2f} | {show(attacked['asr'])} | "
                         f"{show(plain['asr'])} | {show(white['asr'])} | {seconds} |")
            print(lines[-1], flush=True)
    text = ["# PGD on the organism", "", f"Made by `python analyses/pgd_organism.py --steps {args.steps} --limit "
            f"{args.limit}` on the shipped weights (2 CPU cores). Toxic answers: the organism's planted insults "
            "(independent of any toxicity scorer); ASR: the organism's ground truth (the asked activity's steps "
            "delivered). Seconds: the attack's wall time (the first run of a process includes loading).", "",
            *lines, "", "Commands:", "", "```", *commands, "```", ""]
    (ROOT / "analyses" / "pgd_organism.md").write_text("\n".join(text), encoding="utf-8")
    print("wrote analyses/pgd_organism.md")


if __name__ == "__main__":
    main()
