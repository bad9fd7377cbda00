"""The runs folder and the app backend without a browser: persistence, uploads, unsafe names and archives."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from conftest import make_image

from workbench.app.backend import Workbench, user_message
from workbench.core.records import DatasetError
from workbench.core.runs import RunStore
from workbench.steer.steering import parse_layers


def test_run_ids_are_validated_and_runs_are_never_overwritten(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first, folder = store.create("stage1", {"model": "m", "data": "d"})
    second, _ = store.create("stage1", {"model": "m", "data": "d"})
    assert first != second and store.list("stage1")[0] in (first, second)
    assert json.loads((folder / "run.json").read_text())["id"] == first
    for bad in ("../etc", "stage1-../../x", "/etc/passwd", first + "/..", "eval-20260101-000000-zzzz"):
        with pytest.raises(ValueError, match="not a run id"):
            store.path(bad)
    with pytest.raises(ValueError, match="does not exist"):
        store.path("eval-20260101-000000-abcd")


def test_a_stage1_run_reopens_after_a_restart(tmp_path: Path) -> None:
    before = Workbench("tiny-random:llava", tmp_path)
    records, label = before.dataset("demo")
    run_id = before.run_stage1(records, label, "last", "mean_diff")
    after = Workbench("tiny-random:llava", tmp_path)  # a new process would build exactly this
    reopened = after.stage1(run_id)
    assert reopened.best_layer() == before.stage1(run_id).best_layer()
    assert reopened.vector.layers == before.stage1(run_id).vector.layers
    assert after.runs.choices("stage1")[0][1] == run_id


def test_upload_with_an_images_zip(tmp_path: Path) -> None:
    images = tmp_path / "images.zip"
    with zipfile.ZipFile(images, "w") as bundle:
        for name, colour in (("img/a.png", "red"), ("img/b.png", "blue")):
            path = tmp_path / Path(name).name
            make_image(colour).save(path)
            bundle.write(path, name)
    data = tmp_path / "set.jsonl"
    data.write_text('{"prompt": "p", "label": "harmful", "image": "img/a.png"}\n'
                    '{"prompt": "q", "label": "benign", "image": "img/b.png"}\n')
    wb = Workbench("tiny-random:llava", tmp_path / "runs")
    records, label = wb.dataset("", str(data), str(images))
    assert [r.load_image().getpixel((0, 0)) for r in records] == [(255, 0, 0), (0, 0, 255)]
    assert label.startswith("uploads/") and len(wb.records(label)) == 2  # reopens by label, e.g. to resume


def test_an_upload_keeps_its_own_name_and_a_missing_image_is_named_as_written(tmp_path: Path) -> None:
    data = tmp_path / "my set (v2).jsonl"
    data.write_text('{"prompt": "p", "label": "harmful"}\n{"prompt": "q", "label": "benign"}\n')
    wb = Workbench("tiny-random:llava", tmp_path / "runs")
    _, label = wb.dataset("", str(data))
    assert label.startswith("uploads/") and label.endswith("/my_set__v2.jsonl")  # its name shows where it is named
    assert len(wb.records(label)) == 2
    renamed = tmp_path / "other.jsonl"
    renamed.write_bytes(data.read_bytes())
    assert wb.dataset("", str(renamed))[1].endswith("/other.jsonl")  # same rows, another name: its own label
    broken = tmp_path / "shots.jsonl"
    broken.write_text('{"prompt": "p", "label": "harmful", "image": "img/h0.png"}\n')
    with pytest.raises(DatasetError) as error:
        wb.dataset("", str(broken))
    assert user_message(error.value) == ("shots.jsonl line 1: image file 'img/h0.png' does not exist (paths are "
                                         "relative to the dataset file's folder)")


def test_unsafe_archives_and_paths_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as bundle:
        bundle.writestr("../../escape.png", b"x")
    data = tmp_path / "set.jsonl"
    data.write_text('{"prompt": "p", "label": "harmful"}\n')
    wb = Workbench("tiny-random:llava", tmp_path / "runs")
    with pytest.raises(DatasetError, match="unsafe entry"):
        wb.dataset("", str(data), str(evil))
    assert not (tmp_path / "escape.png").exists()
    not_zip = tmp_path / "fake.zip"
    not_zip.write_text("hello")
    with pytest.raises(DatasetError, match="not a zip archive"):
        wb.dataset("", str(data), str(not_zip))
    with pytest.raises(DatasetError, match="not an upload"):
        wb.records("uploads/../../../etc/passwd")


def test_messages_hide_server_paths_and_layers_parse() -> None:
    message = user_message(FileNotFoundError("dataset file /srv/app/runs/uploads/abc/set.jsonl does not exist"))
    assert message == "dataset file set.jsonl does not exist"
    assert parse_layers(" 1, 2 ") == (1, 2) and parse_layers("") is None
    with pytest.raises(ValueError, match="comma-separated"):
        parse_layers("1;2")


def test_an_app_stage2_job_cancels_with_a_checkpoint_and_resumes(tmp_path: Path) -> None:
    import threading

    from workbench.app.jobs import create_stage2, run_stage2, stage2_metrics
    from workbench.core.progress import Cancelled
    from workbench.stage2.loop import Stage2Config

    wb = Workbench("tiny-random:llava", tmp_path)
    records, label = wb.dataset("demo")
    source = wb.run_stage1(records, label, "last", "mean_diff")
    config = Stage2Config(steps=4, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=4, checkpoint_every=2)
    run_id = create_stage2(wb, source, label, config)
    cancel = threading.Event()

    def on_step(metrics) -> None:
        if metrics.step == 2:
            cancel.set()  # the user presses Cancel during step 2

    with pytest.raises(Cancelled, match="cancelled at step 2"):
        run_stage2(wb, run_id, config, False, cancel, on_step)
    assert wb.runs.info(run_id)["status"] == "stopped at step 2 (Cancelled)"
    assert (wb.runs.path(run_id) / "checkpoint.safetensors").is_file()
    with pytest.raises(ValueError, match="no vectors yet"):
        wb.vector(run_id)
    run_stage2(wb, run_id, None, True, threading.Event(), lambda metrics: None)
    assert wb.runs.info(run_id)["status"] == "finished"
    assert [row["step"] for row in stage2_metrics(wb, run_id)] == [1, 2, 3, 4]
    assert wb.vector(run_id).layers


def test_a_notebook_for_an_uploaded_dataset_points_at_the_staged_copy(tmp_path: Path) -> None:
    import re

    from workbench.app.jobs import export_notebook

    data = tmp_path / "set.jsonl"
    data.write_text('{"prompt": "bad", "label": "harmful"}\n{"prompt": "good", "label": "benign"}\n')
    wb = Workbench("tiny-random:llava", tmp_path / "runs")
    records, label = wb.dataset("", str(data))
    run_id = wb.run_stage1(records, label, "last", "mean_diff")
    path = export_notebook(wb, run_id)
    notebook = json.loads(path.read_text())
    source = "".join("".join(cell["source"]) for cell in notebook["cells"])
    staged = path.parent / re.search(r"DATA = '([^']+)'", source).group(1)  # relative to the notebook
    assert staged.is_file() and staged.read_text() == data.read_text()
    assert str(tmp_path) not in source and "/work/" not in source  # no server path in the artefact


def test_an_evaluation_run_is_not_offered_as_vectors(tmp_path: Path) -> None:
    wb = Workbench("tiny-random:llava", tmp_path / "runs")
    run_id, _ = wb.runs.create("eval", {"model": wb.spec, "data": "demo"})
    with pytest.raises(ValueError, match="is an evaluation: it has metrics and generations, not vectors"):
        wb.vector(run_id)


def test_progress_reports_done_total_and_the_time_left_per_phase() -> None:
    from workbench.core.progress import with_eta

    seen: list[str] = []
    times = iter([0.0, 10.0, 20.0, 100.0, 100.0, 130.0])
    report = with_eta(lambda done, total, text: seen.append(text), clock=lambda: next(times))
    report(0, 4, "capture")  # no pace yet: no estimate
    report(1, 4, "capture")  # 10 s for one of four
    report(2, 4, "capture")
    report(4, 4, "capture")  # finished: nothing left to estimate
    report(0, 2, "scoring")  # a new phase restarts the clock
    report(1, 2, "scoring")
    assert seen == ["capture · 0/4", "capture · 1/4 · about 30 s left", "capture · 2/4 · about 20 s left",
                    "capture · 4/4", "scoring · 0/2", "scoring · 1/2 · about 30 s left"]
