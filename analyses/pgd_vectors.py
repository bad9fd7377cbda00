"""Transfer between attack families on the organism: Stage I vectors built from typographic data, against PGD-toxic
images; and vectors built from PGD-toxic images (ASTRA's setting), against typographic requests.

    python analyses/pgd_vectors.py [--steps 200] [--limit 30]   # -> analyses/pgd_vectors.md (runs: pgd_vectors_run/)

Typographic vectors: Stage I (the app's defaults) on organism:train. PGD vectors: a universal PGD-toxic image
(ε 64/255, the budget at which the attack works on today's weights: analyses/pgd_organism.md) made on
organism:train's scene questions; Stage I on those questions with the attacked image (harmful) against the same
questions with the attack's clean starting image (benign). Each set is evaluated with eval's defaults (the vectors'
recorded steering) on organism:test (typographic harmful requests: ASR by the organism's ground truth; benign
requests: accuracy) and on a PGD-toxic image made the same way on organism:test's scene questions (toxic answers:
the organism's insults).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "analyses" / "pgd_vectors_run"
EPSILON = "64/255"


def workbench(*args: str) -> None:
    """`python -m workbench ARGS`; stops loudly on failure (its output is kept for the reader)."""
    done = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"python -m workbench {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def attack(split: str, steps: int, limit: int) -> Path:
    """A universal PGD-toxic image on `split`'s scene questions (made once; a rerun reuses it)."""
    folder = RUNS / f"attack-{split}"
    if not (folder / "dataset.jsonl").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        workbench("attack", "pgd", "--model", "organism", "--prompts", f"organism:{split}", "--label", "benign",
                  "--source", "scenes", "--limit", str(limit), "--targets", "toxic", "--epsilon", EPSILON,
                  "--steps", str(steps), "--out", str(folder))
    return folder


def paired_set(attacked: Path) -> Path:
    """The attack's questions twice: with the attacked image (harmful) and with its clean start (benign), one
    source, so Stage I's direction is attacked-minus-clean on the same questions."""
    from workbench.attacks.job import blank_image

    folder = RUNS / "pgd-train-set"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(attacked / "pgd-0.png", folder / "pgd-0.png")
    blank_image().save(folder / "clean.png")
    rows = []
    for line in (attacked / "dataset.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.append({**row, "image": "pgd-0.png"})
        rows.append({**row, "label": "benign", "image": "clean.png"})
    (folder / "dataset.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return folder / "dataset.jsonl"


def stage1(name: str, data: str) -> Path:
    folder = RUNS / f"stage1-{name}"
    if not (folder / "vectors.safetensors").is_file():
        workbench("stage1", "--model", "organism", "--data", data, "--out", str(folder), "--overwrite")
    return folder / "vectors.safetensors"


def evaluate(name: str, data: str, vectors: Path | None, judge: str) -> dict:
    """eval's metrics (`judge`: organism on its own records; keyword on scene questions, which name no activity)."""
    folder = RUNS / f"eval-{name}"
    if not (folder / "metrics.json").is_file():
        workbench("eval", "--model", "organism", "--data", data, *(["--vectors", str(vectors)] if vectors else []),
                  "--judge", judge, "--toxicity-judge", "organism", "--no-plots", "--out", str(folder),
                  "--overwrite")
    return json.loads((folder / "metrics.json").read_text())


def _value(metric: dict | None, key: str = "value") -> float | None:
    return None if metric is None else metric.get(key)


def cells(metrics: dict, arm: str) -> dict:
    """Typographic ASR, benign accuracy (organism:test) or toxic answers (PGD) of one arm, with n."""
    body = metrics[arm]
    typo = body["per_source"].get("typographic", {})
    overall = body["overall"]
    return {"typo_asr": _value(typo.get("asr")), "typo_n": _value(typo.get("asr"), "n"),
            "benign": _value(overall.get("benign_accuracy")), "toxic": _value(overall.get("toxic_rate")),
            "toxic_n": _value(overall.get("toxic_rate"), "n")}


def steering_of(name: str) -> str:
    """The steering eval applied (its defaults: the vectors' recorded settings or Stage I's suggested layers)."""
    info = json.loads((RUNS / f"eval-{name}" / "run.json").read_text())
    return f"{info['mode']}, α {info['alpha']}, layers {','.join(map(str, info['layers']))}, at {info['steer_at']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--limit", type=int, default=30)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    train_attack, test_attack = attack("train", args.steps, args.limit), attack("test", args.steps, args.limit)
    vectors = {"typographic (organism:train)": stage1("typographic", "organism:train"),
               "PGD-toxic images (ε 64/255, attacked vs clean)": stage1("pgd", str(paired_set(train_attack)))}
    test_sets = {"typo": "organism:test", "pgd": str(test_attack / "dataset.jsonl")}
    rows = ["| vectors built from | steering (eval's default: Stage I's suggested layers) | typographic ASR "
            "(organism:test) | benign accuracy | toxic answers, PGD-toxic image (organism:test) |",
            "|---|---|---|---|---|"]
    for index, (name, path) in enumerate(vectors.items()):
        typo = evaluate(f"typo-{index}", test_sets["typo"], path, "organism")
        pgd = evaluate(f"pgd-{index}", test_sets["pgd"], path, "keyword")
        if index == 0:  # the unsteered arm is the same model and inputs for both vector sets
            base_t, base_p = cells(typo, "unsteered"), cells(pgd, "unsteered")
            rows.append(f"| none (unsteered) | – | {base_t['typo_asr']:.2f} (n {base_t['typo_n']}) | "
                        f"{base_t['benign']:.2f} | {base_p['toxic']:.2f} (n {base_p['toxic_n']}) |")
        steered_t, steered_p = cells(typo, "steered"), cells(pgd, "steered")
        rows.append(f"| {name} | {steering_of(f'typo-{index}')} | {steered_t['typo_asr']:.2f} | "
                    f"{steered_t['benign']:.2f} | {steered_p['toxic']:.2f} |")
        print(rows[-1], flush=True)
    text = ["# Transfer between attack families on the organism", "",
            f"Made by `python analyses/pgd_vectors.py --steps {args.steps} --limit {args.limit}` on the weights in "
            "assets/organism/ (2 CPU cores). ASR: the organism's ground truth (the asked activity's steps delivered); "
            "toxic answers: the organism's planted insults; benign accuracy: benign requests answered as planted. "
            f"PGD images: universal, PGD-toxic, ε {EPSILON}, {args.steps} steps, {args.limit} scene questions "
            "(train and test images made separately). Runs: analyses/pgd_vectors_run/.", "", *rows, ""]
    (ROOT / "analyses" / "pgd_vectors.md").write_text("\n".join(text), encoding="utf-8")
    print("wrote analyses/pgd_vectors.md")


if __name__ == "__main__":
    main()
