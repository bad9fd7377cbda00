"""Break seven features the way a user would notice, one at a time, in a scratch copy, and show which tests
turn red: `python scripts/feature_breaks.py [NAME ...]` (several minutes: the app tests start the app).

These are the seven breaks the tests-that-turn-red issue found passing; each must now be caught. The
working tree is never touched. Exit status 1 when a break is not caught.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name: (file, original text, broken text, tests that should catch it)
BREAKS = {
    "eval ignores --vectors": (
        "workbench/cli/main.py", "vector = SteeringVector.load(args.vectors) if args.vectors else None",
        "vector = None", ["tests/test_evaluation.py::test_eval_cli_writes_metrics_for_both_conditions"]),
    "playground scores table hidden": (
        "workbench/app/tabs/playground.py", 'result["steered"], _scores_markdown(result), result["diff"]',
        'result["steered"], "", result["diff"]', ["tests/test_browser.py", "tests/test_app.py"]),
    "Evaluate tab ignores alpha": (
        "workbench/app/tabs/evaluate.py", "steering = wb.steering(run_id, mode, alpha, layers) if run_id else None",
        "steering = wb.steering(run_id, mode, 0.0, layers) if run_id else None", ["tests/test_app.py"]),
    "HarmBench judge inverted": (
        "workbench/evaluate/judges.py", "verdicts += (yes > no).tolist()", "verdicts += (yes < no).tolist()",
        ["tests/test_evaluation.py::test_a_harmbench_style_classifier_decides_asr"]),
    "GGUF drops the strength": (
        "workbench/steer/vectors.py", "push = alpha * part.scale(layer) * unit", "push = unit",
        ["tests/test_vectors.py"]),
    "steer_at steers every step": (
        "workbench/steer/steering.py", '"prompt": slice(0, 1), "generated": slice(1, None)}',
        '"prompt": slice(0, None), "generated": slice(0, None)}', ["tests/test_steering_math.py"]),
    "Stage II curves never streamed": (
        "workbench/app/tabs/stage2.py", "yield [curves_figure(stage2_metrics(wb, run_id)), status, *keep]",
        "yield [None, status, *keep]", ["tests/test_app.py::test_stage2_streams_curves_and_writes_vectors"]),
}


def main(names: list[str]) -> int:
    missed = []
    for name, (path, original, broken, tests) in BREAKS.items():
        if names and name not in names:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch)
            for part in ("workbench", "tests", "assets", "app.py", "pytest.ini"):
                source = ROOT / part
                (shutil.copytree if source.is_dir() else shutil.copy)(source, copy / part)
            text = (copy / path).read_text()
            if original not in text:
                print(f"{name}: the code it breaks has changed; update scripts/feature_breaks.py")
                return 2
            (copy / path).write_text(text.replace(original, broken))
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], cwd=copy,
                                    capture_output=True, text=True)
            caught = [line.split(" - ")[0].removeprefix("FAILED ") for line in result.stdout.splitlines()
                      if line.startswith(("FAILED", "ERROR"))]
            print(f"{name}: " + (", ".join(caught) if caught else "NOT CAUGHT"), flush=True)
            missed += [] if caught else [name]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
