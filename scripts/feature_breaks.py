"""Break features the way a user would notice, one at a time, in a scratch copy, and show which tests turn red:
`python scripts/feature_breaks.py [NAME ...]` (about half an hour for all: the app tests start the app).

The first seven are the breaks the tests-that-turn-red issue found passing; the rest break what the
app-legibility and hosting issues added. Each must be caught. The working tree is never touched. Exit status 1
when a break is not caught.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOD = ("tests/test_hostile_visitor.py::"
         "test_one_visitors_flood_is_refused_at_once_and_another_visitor_is_served_meanwhile")
# name: (file, original text, broken text, tests that should catch it)
BREAKS = {
    "eval ignores --vectors": (
        "workbench/cli/main.py", "vectors=args.vectors and str(Path(args.vectors).resolve()),", "vectors=None,",
        ["tests/test_evaluation.py::test_eval_cli_writes_metrics_for_both_conditions"]),
    "playground scores table hidden": (
        "workbench/app/tabs/playground.py", 'result["steered"], _scores_markdown(result), result["diff"]',
        'result["steered"], "", result["diff"]', ["tests/test_browser.py", "tests/test_app.py"]),
    "Evaluate tab ignores alpha": (
        "workbench/app/tabs/evaluate.py", "wb.steering_choice(run_id, mode, alpha, layers) if run_id",
        "wb.steering_choice(run_id, mode, 0.0, layers) if run_id", ["tests/test_app.py"]),
    "HarmBench judge inverted": (
        "workbench/evaluate/judges.py", "verdicts += (yes > no).tolist()", "verdicts += (yes < no).tolist()",
        ["tests/test_evaluation.py::test_a_harmbench_style_classifier_decides_asr"]),
    "GGUF drops the strength": (
        "workbench/steer/vectors.py", "push = alpha * part.scale(layer) * unit", "push = unit",
        ["tests/test_vectors.py"]),
    "steer_at steers every step": (
        "workbench/steer/steering.py", '"prompt": slice(0, 1), "generated": slice(1, None),',
        '"prompt": slice(0, None), "generated": slice(0, None),', ["tests/test_steering_math.py"]),
    "Stage II curves never streamed": (
        "workbench/app/tabs/stage2.py", "yield [curves_figure(stage2_metrics(wb, run_id)), status, *keep]",
        "yield [None, status, *keep]", ["tests/test_app.py::test_stage2_streams_curves_and_writes_vectors"]),
    # the app-legibility and hosting issues (2026-12-07)
    "a changed subject counted as a refusal": (
        "workbench/evaluate/answers.py", '    if activities_delivered(text):\n        return "another activity"',
        '    if activities_delivered(text):\n        return "refused"', ["tests/test_evaluation.py"]),
    "token view marks every position steered": (
        "workbench/steer/token_view.py", "steered=steered_here[keep].tolist()", "steered=[True] * int(keep.sum())",
        ["tests/test_token_view.py::test_the_organism_view_picks_out_the_steered_positions_and_the_token_the_steering_decided"]),
    "token view's Δ log p one token off": (
        "workbench/steer/token_view.py", "float(change[p - 1]) if a and p > 0", "float(change[p - 2]) if a and p > 1",
        ["tests/test_token_view.py"]),
    "an upload loses its own name": (
        "workbench/app/storage.py", "    target = folder / name\n",
        '    target = folder / ("dataset" + source.suffix.lower())\n', ["tests/test_runs_and_backend.py"]),
    "zip bombs unpack": (
        "workbench/app/storage.py", "        if unpacked > MAX_ZIP_RATIO * max(",
        "        if False and unpacked > MAX_ZIP_RATIO * max(",
        ["tests/test_hosting.py::test_disk_is_bounded_in_files_and_ratio_and_a_full_disk_refuses_uploads"]),
    "a hosted visitor runs many jobs at once": (
        "workbench/app/context.py", "            if session in self.running:", "            if False:", [FLOOD]),
    "the time left extrapolates the warm-up step": (
        "workbench/core/progress.py", "timed = list(seconds[1:])[-20:]", "timed = list(seconds)[-20:]",
        ["tests/test_stage2.py::test_the_time_left_settles_on_the_steady_pace_instead_of_extrapolating_the_warm_up_step"]),
    "the model's lock lets a loop barge": (
        "workbench/core/models.py", "lock: FairLock = field(default_factory=FairLock, repr=False)",
        "lock: FairLock = field(default_factory=__import__('threading').RLock, repr=False)",
        ["tests/test_concurrency.py::test_the_model_lock_serves_waiters_in_order_so_a_loop_cannot_keep_it",
         FLOOD]),
    "the sweep steers every layer when the box is empty": (
        "workbench/app/backend.py", "steering = self.steering(run_id, mode, float(alpha), layers)",
        "steering = Steering(self.vector(run_id), mode, float(alpha), parse_layers(layers))",
        ["tests/test_app.py"]),
    # the pipelines audit of the tests-for-pipelines issue, each a one-line break a user would see
    "Stage I pools every record instead of weighting sources equally": (
        "workbench/stage1/pipeline.py", "        combined = D.combined_direction(per_source)",
        "        combined = D.directions(acts, method)",
        ["tests/test_shared_pipelines.py::test_stage1s_saved_direction_weighs_each_source_equally_on_an_unbalanced_set"]),
    "evaluation intervals ignore repeated inputs": (
        "workbench/evaluate/evaluation.py", "_stat([v for _, _, v in rows], [c for _, c, _ in rows], resamples, seed)",
        "_stat([v for _, _, v in rows], [str(i) for i, _, _ in rows], resamples, seed)",
        ["tests/test_judges_and_stats.py", "tests/test_evaluation.py"]),
    "Stage II vectors forget their training records": (
        "workbench/stage2/loop.py", "| {record_key(r) for r in self.records}),", "),",
        ["tests/test_stage2.py::test_only_steering_parameters_change_and_the_vlm_is_bitwise_unchanged"]),
    "compare's over-refusal column reads the refusal rate": (
        "workbench/evaluate/compare.py", 'cells["over-refusal"] = overall["over_refusal"]',
        'cells["over-refusal"] = overall["refusal_rate"]',
        ["tests/test_shared_pipelines.py::test_every_compare_cell_is_the_share_eval_counts_on_the_same_answers"]),
    "a JSONL without a final newline loses its last row": (
        "workbench/core/records.py", 'for number, line in enumerate(text.split("\\n"), start=1):',
        'for number, line in enumerate(text.split("\\n")[:-1], start=1):', ["tests/test_data.py"]),
    "the notebook steers with other settings": (
        "workbench/export/notebook.py", 'f"steering = Steering(vector, {mode!r}, {alpha!r}, ',
        'f"steering = Steering(vector, \'adaptive\', 1.0, ',
        ["tests/test_evaluation.py::test_an_eval_runs_notebook_steers_with_that_runs_settings"]),
    "the dual-use check skipped for Compare, sweep and Evaluate": (
        "workbench/app/backend.py",
        "        self.check_dual_use(steering.mode, steering.alpha, steering.vector, steering.active_layers)",
        "        pass", ["tests/test_hosting.py"]),
    "Evaluate hides what the answers are": (
        "workbench/app/tabs/evaluate.py", "        answers = shares_table(metrics)\n", '        answers = ""\n',
        ["tests/test_app.py::test_evaluate_and_exports"]),
    "a length count resets another thread's padding": (
        "workbench/core/models.py", "        with self.lock:\n            return list(self.tokenizer(text,",
        "        if True:\n            return list(self.tokenizer(text,",
        ["tests/test_concurrency.py::test_tokenizing_in_one_thread_never_breaks_another_threads_padded_batch"]),
    "Stage I's table clipped again": (
        "workbench/app/tabs/stage1.py", "wrap=True, min_width=640,", "",
        ["tests/test_browser.py::test_stage1_and_the_token_view_read_whole_at_1280_and_1920_px"]),
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
                      if line.startswith(("FAILED tests/", "ERROR tests/"))]  # not log lines saying ERROR
            print(f"{name}: " + (", ".join(caught) if caught else "NOT CAUGHT"), flush=True)
            missed += [] if caught else [name]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
