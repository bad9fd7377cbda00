"""Safe to host: what a hostile visitor tries, refused (library level here; through the running app with
--hosted in test_hostile_visitor.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import make_image

from workbench.app.backend import Workbench
from workbench.app.context import md_text
from workbench.app.hosting import MAX_PROMPT_CHARS, SERVER_PATH_REFUSED, HostPolicy, host_policy
from workbench.core.records import DatasetError
from workbench.core.runlock import RunBusy, RunLock
from workbench.core.runs import RunStore

HOSTED = HostPolicy(hosted=True, allow_server_paths=False)


def test_hosting_mode_is_on_where_visitors_are_untrusted() -> None:
    assert not host_policy("127.0.0.1", environ={}).hosted
    assert host_policy("0.0.0.0", environ={}).hosted and not host_policy("0.0.0.0", environ={}).allow_server_paths
    assert host_policy("127.0.0.1", environ={"SPACE_ID": "me/app"}).hosted
    assert host_policy("127.0.0.1", hosted=True, environ={}).hosted
    assert not host_policy("0.0.0.0", trusted_local=True, environ={}).hosted
    assert host_policy("0.0.0.0", allow_server_paths=True, environ={}).allow_server_paths
    assert not host_policy("0.0.0.0", environ={}).allow_model_switch


def test_a_visitor_cannot_read_server_files_and_cannot_tell_which_exist(tmp_path: Path) -> None:
    secret = tmp_path / "secret" / "users.csv"
    secret.parent.mkdir()
    secret.write_text("prompt,label,password_hash\nx,harmful,abc\n")
    wb = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    for spec in (str(secret), str(tmp_path / "secret" / "missing.csv"), "advbench:/usr", "/etc/passwd",
                 "xstest:" + str(secret.parent), "uploads/../../secret/users.csv"):
        with pytest.raises(DatasetError) as error:
            wb.records(spec)
        assert str(error.value) in (SERVER_PATH_REFUSED, f"{spec!r} is not an upload of this app"), spec
        assert "password" not in str(error.value)
    assert len(wb.records("demo")) == 16  # the listed sets stay available
    trusted = Workbench("tiny-random:llava", tmp_path / "runs2")
    assert trusted.records(str(secret))[0].prompt == "x"  # a trusted local user may name files


def test_uploads_are_confined_and_a_rejected_upload_leaves_nothing(tmp_path: Path) -> None:
    wb = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    outside = tmp_path / "private.png"
    make_image("red").save(outside)
    data = tmp_path / "up.jsonl"
    data.write_text(json.dumps({"prompt": "p", "label": "harmful", "image": "../../../private.png"}) + "\n")
    images = tmp_path / "images.zip"
    with zipfile.ZipFile(images, "w") as bundle:
        bundle.writestr("big.bin", b"\0" * 100_000)
    with pytest.raises(DatasetError, match="leaves the dataset's folder"):
        wb.dataset("", str(data), str(images))
    uploads = tmp_path / "runs" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), list(uploads.iterdir())
    data.write_text('{"prompt": "p", "label": "harmful"}\n{"prompt": "q", "label": "benign"}\n')
    records, label = wb.dataset("", str(data))
    assert label.startswith("uploads/") and wb.records(label)[0].prompt == "p"  # the visitor's own upload reopens


@pytest.mark.parametrize("entry", ["link.png", "../escape.png", "/abs/escape.png"])
def test_an_images_zip_with_a_link_or_an_escaping_path_is_refused_and_leaves_nothing(tmp_path: Path, entry: str
                                                                                       ) -> None:
    wb = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    data = tmp_path / "up.jsonl"
    data.write_text(json.dumps({"prompt": "p", "label": "harmful", "image": "ok.png"}) + "\n")
    images = tmp_path / "images.zip"
    with zipfile.ZipFile(images, "w") as bundle:
        bundle.writestr("ok.png", b"not read")
        member = zipfile.ZipInfo(entry)
        if entry == "link.png":  # a symbolic link to a server file, as `zip --symlinks` stores it
            member.external_attr = (0o120777 << 16)
            bundle.writestr(member, "/etc/passwd")
        else:
            bundle.writestr(member, b"x")
    with pytest.raises(DatasetError, match="unsafe entry"):
        wb.dataset("", str(data), str(images))
    uploads = tmp_path / "runs" / "uploads"
    assert not uploads.exists() or not any(uploads.rglob("*.png")), list(uploads.rglob("*"))
    assert not (tmp_path / "runs" / "escape.png").exists() and not Path("/abs/escape.png").exists()


def test_hosted_model_is_fixed_and_prompts_are_capped(tmp_path: Path) -> None:
    wb = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    with pytest.raises(ValueError, match="model is fixed by the host"):
        wb.switch_model("tiny-random:gemma3")
    with pytest.raises(ValueError, match=f"keep it under {MAX_PROMPT_CHARS:,}"):
        wb.compare(None, None, "x" * (MAX_PROMPT_CHARS + 1), 8)  # type: ignore[arg-type]


def test_labels_and_names_render_as_text() -> None:
    shown = md_text('<div style="position:fixed">x</div><form action=//evil><img src=https://evil/x.png>`[a](b)`')
    assert "<" not in shown and ">" not in shown and "[a](" not in shown and "`" not in shown.replace("\\`", "")
    linked = md_text("see https://evil.example/x, www.evil.example and me@evil.example")
    assert "://" not in linked and "www." not in linked and "e@" not in linked  # GFM would autolink each
    assert linked.replace("\u2060", "") == "see https://evil.example/x, www.evil.example and me@evil.example"


MARKUP = '<a href="https://evil.example">x</a><img src=x><b>bold</b>*y*'


def test_visitor_strings_are_plain_text_in_toasts_and_figures() -> None:
    """A visitor's source, defence or data name and prompt appear in error toasts, plot legends, axis categories and
    hover text; plotly and Gradio's toasts read HTML, so none may arrive as a tag."""
    import gradio as gr
    import numpy as np
    import torch

    from workbench.app.context import friendly_errors
    from workbench.export.plots import compare_figure, separation_figure, similarity_figure

    @friendly_errors
    def fails() -> None:
        raise ValueError(f"line 2: unknown label {MARKUP!r}")

    with pytest.raises(gr.Error) as toast:
        fails()
    assert "<" not in toast.value.message and "&lt;a href" in toast.value.message
    scatter = separation_figure(np.zeros((2, 2)), ["harmful", "benign"], [MARKUP, MARKUP], [MARKUP, MARKUP], 1, "pca")
    heat = similarity_figure(torch.eye(2)[None], [MARKUP, "text"], 0)
    cell = {"value": 0.5, "ci": None}
    bars = compare_figure({"rows": {MARKUP: {"cells": {"d": {MARKUP: cell}}}}, "judges": {"d": "keyword"}}, "d")
    shown = [t.name for t in scatter.data] + [str(t.customdata) for t in scatter.data] + list(heat.data[0].x) + \
        list(heat.data[0].y) + [bars.data[0].name] + list(bars.data[0].x)
    assert all("<" not in text for text in shown), shown
    assert sum("&lt;a href" in text for text in shown) == 8  # legend, hover (x2 each), heatmap x, y, bar name, x
    assert "&lt;a href" in bars.data[0].x[0]


def test_one_writer_per_run_folder(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    lock = RunLock(folder)
    lock.acquire()
    with pytest.raises(RunBusy, match="being written by this app"):
        RunLock(folder).acquire()  # a second trainer in the same process (another Gradio thread)
    lock.release()
    other = subprocess.Popen([sys.executable, "-c", "import sys, time; from workbench.core.runlock import RunLock; "
                              f"RunLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=f"being written by process {other.pid}"):
            RunLock(folder).check_free()
    finally:
        other.kill()
        other.wait()
    RunLock(folder).acquire()  # the dead process's lock is stale: taken over


def test_a_run_killed_mid_way_shows_interrupted_not_running(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id, folder = store.create("stage2", {"model": "m", "data": "d", "status": "running"})
    (folder / ".writer.lock").write_text("999999\n")  # its process is gone
    assert store.info(run_id)["status"].startswith("interrupted")
    with RunLock(folder):
        assert store.info(run_id)["status"] == "running"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_cli_never_replaces_earlier_results_and_says_why_in_one_line(tmp_path: Path) -> None:
    stage2 = tmp_path / "s2"
    stage2.mkdir()
    (stage2 / "config.json").write_text("{}")
    (stage2 / "metrics.jsonl").write_text("")
    (stage2 / "vectors.safetensors").write_bytes(b"refined")
    stage1 = tmp_path / "s1"
    stage1.mkdir()
    (stage1 / "run.json").write_text(json.dumps({"kind": "stage1", "model": "m", "data": "d"}))
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (("stage1", "--model", "tiny-random:llava", "--data", "demo", "--out", str(stage2)),
         "already holds a stage2 run"),
        (("eval", "--model", "tiny-random:llava", "--data", "demo", "--out", str(stage1)),
         "already holds a stage1 run"),
        (("stage1", "--model", "tiny-random:llava", "--data", "demo", "--out", str(afile)), "is a file"),
        (("eval", "--model", "tiny-random:llava", "--data", "demo", "--out", str(tmp_path / "e"), "--limit", "-3"),
         "--limit must be at least 1"),
        (("stage2", "--model", "tiny-random:llava", "--vectors", "v", "--data", "demo", "--out",
          str(tmp_path / "none"), "--resume"), "holds no Stage II checkpoint"),
    ]
    for args, message in cases:
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert (stage2 / "vectors.safetensors").read_bytes() == b"refined"
    assert json.loads((stage1 / "run.json").read_text())["kind"] == "stage1"


def test_cli_bad_files_get_messages_not_tracebacks(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    deep = tmp_path / "deep.safetensors"
    save_file({"direction.0": torch.ones(4)}, str(deep), {"metadata": "[" * 200_000 + "]" * 200_000})
    listed = tmp_path / "list.safetensors"
    save_file({"direction.0": torch.ones(4)}, str(listed), {"metadata": "[1, 2]"})
    bomb = tmp_path / "bomb.png"
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)) +
                     chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "stage1", "model": "m", "data": {"a": 1}}))
    cases = [
        (("steer", "--model", "tiny-random:llava", "--vectors", str(deep), "--prompt", "hi"), "nested too deep"),
        (("steer", "--model", "tiny-random:llava", "--vectors", str(listed), "--prompt", "hi"),
         "metadata must be a JSON object"),
        (("notebook", "--run", str(run), "--out", str(tmp_path / "n.ipynb")), "lacks a text 'data'"),
    ]
    vector = tmp_path / "v.safetensors"
    from workbench.steer.vectors import SteeringVector

    SteeringVector({0: torch.ones(32)}).save(vector)
    cases += [(("steer", "--model", "tiny-random:llava", "--vectors", str(vector), "--prompt", "hi", "--image",
                str(bomb)), "too large to open safely"),
              (("steer", "--model", "tiny-random:llava", "--vectors", str(vector), "--prompt", "hi", "--image",
                str(tmp_path)), "is a folder")]
    for args, message in cases:
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr[-800:])
        assert "Traceback" not in result.stderr


def test_dual_use_is_off_for_real_models_in_hosting_mode(tmp_path: Path) -> None:
    from workbench.app.hosting import DUAL_USE_REFUSED

    real = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    for mode, alpha in (("additive", 2.0), ("adaptive", -1.0), ("ablation", -1.0), (None, None)):
        with pytest.raises(ValueError, match="dual-use policy"):
            real.check_dual_use(mode, alpha)
    for mode, alpha in (("additive", -2.0), ("adaptive", 1.0), ("ablation", 1.0)):
        real.check_dual_use(mode, alpha)  # defending is always allowed
    Workbench("organism", tmp_path / "runs2", HOSTED).check_dual_use("additive", 5.0)  # the organism is for attacks
    Workbench("tiny-random:llava", tmp_path / "runs3").check_dual_use("additive", 5.0)  # trusted local use
    assert "dual-use" in DUAL_USE_REFUSED


def test_the_app_makes_jailbreak_images_only_on_the_organism_when_hosted_and_never_runs_the_long_recipe(
        tmp_path: Path) -> None:
    """The Attacks tab's PGD job (and its folder) is refused on a hosted real model; the reproduce recipe is refused in
    hosting mode on any model; an attack run's dataset is reachable only by its run id, never by a path."""
    from workbench.app.jobs import run_attack, run_reproduction
    from workbench.data.sources import load_dataset

    real = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    with pytest.raises(ValueError, match="dual-use policy"):
        run_attack(real, "demo", load_dataset("demo"), "affirmative", "32/255", 2, "harmful", "", 2)
    assert not any((tmp_path / "runs").rglob("run.json"))
    organism = Workbench("organism", tmp_path / "runs2", HOSTED).for_visitor("a")
    with pytest.raises(ValueError, match="does not run the 40-minute recipe"):
        run_reproduction(organism)
    run_id, result = run_attack(organism, "organism:test", organism.records("organism:test"), "toxic", "16/255", 2,
                                "benign", "scenes", 2)
    assert len(organism.records(f"{run_id}/dataset.jsonl")) == 2 and len(result.losses) == 2
    other = Workbench("organism", tmp_path / "runs2", HOSTED).for_visitor("b")
    for label in (f"{run_id}/dataset.jsonl", f"attack-../../{run_id}/dataset.jsonl"):
        with pytest.raises((ValueError, DatasetError)):
            other.records(label)


def test_stage2_on_a_real_model_in_hosting_mode_refuses_training_toward_harm(tmp_path: Path) -> None:
    """Stage II steers while it samples: creating (or resuming) a run with a harm-pushing α is refused before any
    run folder is made (issue 47: it was never checked)."""
    import dataclasses
    import json
    import threading

    from workbench.app.jobs import create_stage2, run_stage2
    from workbench.stage2.loop import Stage2Config
    from workbench.steer.vectors import SteeringVector

    real = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    source, made = real.runs.create("stage1", {"model": real.spec, "data": "demo"})
    SteeringVector({k: torch.ones(32) for k in (0, 1)}, {k: torch.zeros(32) for k in (0, 1)}).save(
        made / "vectors.safetensors")
    with pytest.raises(ValueError, match="dual-use policy"):
        create_stage2(real, source, "demo", Stage2Config(mode="additive", alpha=5.0))
    assert real.runs.list() == [source]
    run_id, folder = real.runs.create("stage2", {"model": real.spec, "data": "demo", "source_run": source})
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(Stage2Config(mode="additive", alpha=5.0))))
    with pytest.raises(ValueError, match="dual-use policy"):
        run_stage2(real, run_id, None, True, threading.Event(), lambda metrics: None)


def test_each_cancel_button_stops_only_its_own_job(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from workbench.app.context import AppContext

    ctx = AppContext(Workbench("tiny-random:llava", tmp_path / "runs"))
    me, other = SimpleNamespace(session_hash="me"), SimpleNamespace(session_hash="other")
    training, evaluating = ctx.cancel_flag(me, "stage2"), ctx.cancel_flag(me, "evaluate")  # type: ignore[arg-type]
    theirs = ctx.cancel_flag(other, "stage2")  # type: ignore[arg-type]
    assert ctx.canceller("stage2")(me).startswith("Cancelling")  # type: ignore[arg-type]
    assert training.is_set() and not evaluating.is_set() and not theirs.is_set()
    assert ctx.canceller("stage1")(me) == "Nothing of this tab is running."  # type: ignore[arg-type]


def test_damaged_run_json_does_not_hide_other_runs_and_downloads_do_not_pile_up(tmp_path: Path) -> None:
    from workbench.app.context import DELIVERIES_KEPT, deliver

    store = RunStore(tmp_path / "runs")
    good, _ = store.create("stage1", {"model": "m", "data": "d"})
    bad, folder = store.create("stage1", {"model": "m", "data": "d"})
    (folder / "run.json").write_text("[1, 2")
    labels = dict((run_id, label) for label, run_id in store.choices("stage1"))
    assert good in labels and labels[bad].endswith("damaged run.json")
    artefact = tmp_path / "a.txt"
    artefact.write_text("x")
    copies = [Path(deliver(artefact)) for _ in range(DELIVERIES_KEPT + 5)]
    assert all(c.read_text() == "x" for c in copies[-3:]) and len(list(copies[-1].parent.parent.iterdir())) <= \
        DELIVERIES_KEPT


def test_hosted_visitors_see_and_open_only_their_own_runs_and_uploads(tmp_path: Path) -> None:
    host = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED)
    alice, bob = host.for_visitor("alice-session"), host.for_visitor("bob-session")
    run_id, _ = alice.runs.create("stage1", {"model": "tiny-random:llava", "data": "demo"})
    upload = tmp_path / "mine.jsonl"
    upload.write_text('{"prompt": "p", "label": "harmful"}\n{"prompt": "q", "label": "benign"}\n')
    _, label = alice.dataset("", str(upload))
    assert alice.runs.list() == [run_id] and len(alice.records(label)) == 2
    assert bob.runs.list() == [] and bob.runs.choices("stage1") == []  # not listed in bob's pickers
    with pytest.raises(ValueError, match="does not exist"):
        bob.runs.path(run_id)  # nor opened by id
    with pytest.raises(DatasetError, match="not an upload"):
        bob.records(label)  # nor alice's upload by its label
    assert host.for_visitor("alice-session").runs.list() == [run_id]  # the same session finds its runs again
    assert not (tmp_path / "runs" / run_id).exists()  # nothing in the shared folder
    with pytest.raises(ValueError, match="browser session"):
        host.for_visitor(None)
    trusted = Workbench("tiny-random:llava", tmp_path / "local")
    assert trusted.for_visitor("anyone") is trusted  # local use: one user, every run


def test_idle_and_over_quota_visitor_folders_go_but_never_one_being_written(tmp_path: Path, monkeypatch) -> None:
    import time

    from workbench.app import storage as backend

    root = tmp_path / "visitors"
    folders = {}
    for name, age_hours in (("idle", 30), ("writing", 30), ("recent", 2), ("older", 5)):
        store = RunStore(root / name)
        _, run = store.create("stage2", {"model": "m"})
        (run / "blob").write_bytes(b"x" * 1000)
        stamp = time.time() - age_hours * 3600
        for path in (run / "blob", run / "run.json", run, root / name):
            os.utime(path, (stamp, stamp))
        folders[name] = run
    with RunLock(folders["writing"]):
        removed = {p.name for p in backend.trim_visitor_folders(root)}
        assert removed == {"idle"}  # a day idle; the one with a live writer stays however old
        room = backend._folder_bytes(root / "writing") + backend._folder_bytes(root / "recent")
        monkeypatch.setattr(backend, "VISITORS_QUOTA_BYTES", room)  # room for two of the three left
        removed = {p.name for p in backend.trim_visitor_folders(root)}
        assert removed == {"older"}  # least recently used first, until under the quota
    assert {p.name for p in root.iterdir()} == {"writing", "recent"}


def test_a_visitor_who_leaves_stops_their_jobs_and_no_one_elses(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from workbench.app.context import AppContext

    ctx = AppContext(Workbench("tiny-random:llava", tmp_path / "runs"))
    me, other = SimpleNamespace(session_hash="me"), SimpleNamespace(session_hash="other")
    mine = [ctx.cancel_flag(me, job) for job in ("stage1", "stage2", "evaluate")]  # type: ignore[arg-type]
    theirs = ctx.cancel_flag(other, "stage2")  # type: ignore[arg-type]
    ctx.stop_session(me)  # type: ignore[arg-type]
    assert all(flag.is_set() for flag in mine) and not theirs.is_set()


def test_a_model_switch_never_lands_in_the_middle_of_a_job(tmp_path: Path, monkeypatch) -> None:
    from workbench.app import backend

    wb = Workbench("tiny-random:llava", tmp_path / "runs")  # trusted local use: switching is allowed
    seen = []

    def stage1_that_meets_a_switch(spec, folder, vlm, records, *args, **kwargs):
        with pytest.raises(ValueError, match="a job is running on 'tiny-random:llava'"):
            wb.switch_model("tiny-random:qwen2_vl")  # another tab asks while this job runs
        seen.append(wb.spec)
        assert wb.runs.list() == [] and folder.parent.name == ".staging"  # a run being made is listed nowhere
        raise RuntimeError("stop here")

    monkeypatch.setattr(backend, "run_stage1_preset_job", stage1_that_meets_a_switch)
    with pytest.raises(RuntimeError, match="stop here"):
        wb.run_stage1([], "demo", "last", "mean_diff")
    assert seen == ["tiny-random:llava"]
    assert wb.runs.list() == []  # a Stage I run that failed leaves no folder
    wb.switch_model("tiny-random:qwen2_vl")  # with no job running it switches
    assert wb.spec == "tiny-random:qwen2_vl"


def test_uploads_are_held_to_row_and_field_quotas_and_leave_nothing(tmp_path: Path) -> None:
    from workbench.core.records import MAX_UPLOAD_FIELD_CHARS, MAX_UPLOAD_RECORDS

    wb = Workbench("tiny-random:llava", tmp_path / "runs", HOSTED).for_visitor("v")
    long_line = tmp_path / "long.jsonl"
    long_line.write_text(json.dumps({"prompt": "x" * (MAX_UPLOAD_FIELD_CHARS + 1), "label": "harmful"}) + "\n")
    with pytest.raises(DatasetError, match=r"long.jsonl line 1: prompt is 4,001 characters; keep every field under"):
        wb.dataset("", str(long_line))
    many = tmp_path / "many.csv"
    many.write_text("prompt,label\n" + "p,benign\n" * (MAX_UPLOAD_RECORDS + 1))
    with pytest.raises(DatasetError, match="more than 20,000 records"):
        wb.dataset("", str(many))
    assert not list((wb.runs.root / "uploads").iterdir())  # neither left anything behind
    (tmp_path / "local.jsonl").write_text(long_line.read_text())  # the host's own files are not uploads
    assert len(Workbench("tiny-random:llava", tmp_path / "runs2").records(str(tmp_path / "local.jsonl"))) == 1


def test_export_offers_only_what_the_picked_run_has() -> None:
    from workbench.app.tabs.export import buttons_for

    def clickable(run_id: str | None) -> list[bool]:
        return [update["interactive"] for update in buttons_for(run_id)[:4]]

    assert clickable("eval-20260101-000000-abcd") == [False, False, True, True]  # no vectors in an evaluation
    assert clickable("stage2-20260101-000000-abcd") == [True, True, True, False]
    assert clickable("stage1-20260101-000000-abcd") == [True, True, True, True]
    assert clickable(None) == clickable("../etc") == [False] * 4


def test_a_hosted_job_stops_at_the_hosts_time_limit_and_the_queue_is_bounded(tmp_path: Path) -> None:
    """Hosted, every job's cancel flag is also set by the host's wall-clock limit (default 20 min), and at most 16
    requests wait for the model; locally neither limit applies unless given."""
    import time
    from types import SimpleNamespace

    from workbench.app.context import AppContext
    from workbench.app.jobs import run_attack
    from workbench.core.progress import Cancelled

    hosted, local = host_policy("0.0.0.0"), host_policy("127.0.0.1")
    assert (hosted.job_minutes, hosted.max_queue) == (20, 16) and (local.job_minutes, local.max_queue) == (None, None)
    assert host_policy("127.0.0.1", job_minutes=5).job_minutes == 5
    with pytest.raises(ValueError, match="the queue size must be positive"):
        host_policy("0.0.0.0", max_queue=0)
    ctx = AppContext(Workbench("organism", tmp_path / "runs", HostPolicy(True, False, job_minutes=0.02)))
    request = SimpleNamespace(session_hash="visitor-1")
    wb, flag = ctx.visitor(request), ctx.cancel_flag(request, "attack")
    started = time.time()
    with pytest.raises(Cancelled, match="PGD cancelled at step"):
        run_attack(wb, "organism:test", wb.records("organism:test"), "toxic", "32/255", 1000, "benign", "scenes", 4,
                   None, flag)
    assert time.time() - started < 60 and not list((tmp_path / "runs").rglob("attack.json"))  # nothing half-made


def test_the_dual_use_policy_judges_the_effect_so_a_flipped_direction_cannot_pass(tmp_path: Path) -> None:
    """Issue 47: swapping an upload's labels flips Stage I's direction, and -1 * v composes the same; with the host's
    reference direction both are refused on a hosted real model at the sign that looks defensive, on every path that
    steers (playground, sweep, compare, Stage II creation), while honest defending steering is allowed."""
    from workbench.app.jobs import create_stage2, run_comparison
    from workbench.stage2.loop import Stage2Config
    from workbench.steer.vectors import SteeringVector

    vlm_layers, size = 2, 32  # tiny-random:llava's text model
    honest = SteeringVector({k: torch.randn(size, generator=torch.Generator().manual_seed(k))
                             for k in range(vlm_layers)}, {k: torch.zeros(size) for k in range(vlm_layers)},
                            {"model": "tiny-random:llava"})
    reference = tmp_path / "reference.safetensors"
    honest.save(reference)
    policy = HostPolicy(True, False, reference_vectors=str(reference))
    host = Workbench("tiny-random:llava", tmp_path / "runs", policy)
    assert host.vlm.hidden_size == size and host.vlm.num_layers >= vlm_layers
    wb = host.for_visitor("visitor")
    runs = {}
    for name, vector in (("honest", honest), ("flipped", SteeringVector(
            {k: -v for k, v in honest.directions.items()}, honest.calibration, dict(honest.metadata))),
            ("negated", -1.0 * honest)):
        run_id, folder = wb.runs.create("stage1", {"model": wb.spec, "data": "demo"})
        vector.save(folder / "vectors.safetensors")
        runs[name] = run_id
    for mode, alpha in (("additive", -4.0), ("adaptive", 1.0)):  # the defending sign for an honest direction
        wb.steering(runs["honest"], mode, alpha, "")
        for name in ("flipped", "negated"):
            with pytest.raises(ValueError, match="dual-use policy"):
                wb.steering(runs[name], mode, alpha, "")
            with pytest.raises(ValueError, match="dual-use policy"):
                wb.sweep(runs[name], None, "hello", mode, "", [alpha], 2)
        wb.steering(runs["flipped"], mode, -alpha, "")  # its own defending sign is what defends now
    with pytest.raises(ValueError, match="dual-use policy"):
        create_stage2(wb, runs["flipped"], "demo", Stage2Config(mode="adaptive", alpha=1.0, layers=[0, 1], steps=1))
    flipped = SteeringVector.load(wb.runs.path(runs["flipped"]) / "vectors.safetensors")
    flipped.metadata["steering"] = {"mode": "adaptive", "alpha": 1.0, "layers": [0, 1]}
    flipped.save(wb.runs.path(runs["flipped"]) / "vectors.safetensors")
    with pytest.raises(ValueError, match="dual-use policy"):
        run_comparison(wb, [runs["flipped"]], ["demo"], 2, "keyword", None)
    # without a reference the sign rule still sees a composed -1 * v
    plain = Workbench("tiny-random:llava", tmp_path / "runs2", HOSTED).for_visitor("visitor")
    run_id, folder = plain.runs.create("stage1", {"model": plain.spec, "data": "demo"})
    (-1.0 * honest).save(folder / "vectors.safetensors")
    with pytest.raises(ValueError, match="dual-use policy"):
        plain.steering(run_id, "additive", -4.0, "")


def test_disk_is_bounded_in_files_and_ratio_and_a_full_disk_refuses_uploads(tmp_path: Path, monkeypatch) -> None:
    """Issue 47, finding 5: 20,000 empty files per zip were kept and never trimmed (the quota counted bytes), a
    0.58 MB zip stored 597 MB, and fresh folders could pass the 8 GB total."""
    from workbench.app import storage

    wb = Workbench("organism", tmp_path / "runs", HOSTED).for_visitor("someone")
    data = tmp_path / "up.jsonl"
    data.write_text(json.dumps({"prompt": "p", "label": "harmful", "image": "img/a.png"}) + "\n"
                    + json.dumps({"prompt": "q", "label": "benign"}) + "\n")
    image = tmp_path / "a.png"
    make_image("red").save(image)
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as bundle:
        for i in range(storage.MAX_ZIP_FILES + 1):
            bundle.writestr(f"empty/{i}.png", b"")
    with pytest.raises(DatasetError, match=f"at most {storage.MAX_ZIP_FILES} files"):
        wb.dataset("", str(data), str(many))
    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as bundle:
        bundle.write(image, "img/a.png")
        for i in range(300):
            bundle.writestr(f"empty/{i}.png", b"")  # empty: not an image
            bundle.writestr(f"notes/{i}.txt", b"x")  # not an image file
    records, label = wb.dataset("", str(data), str(junk))
    staged = wb.runs.root / label.rsplit("/", 1)[0]
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "img/a.png", "up.jsonl"]  # only what a record can use reached the disk
    assert records[0].load_image().size == (40, 32)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("img/a.png", b"\0" * 5_000_000)
    with pytest.raises(DatasetError, match="unpacks to .*x its size"):
        wb.dataset("", str(data), str(bomb))
    # the files quota: an upload that would pass it trims the oldest first
    monkeypatch.setattr(storage, "UPLOAD_FILES_QUOTA", storage.MAX_ZIP_FILES + 1)  # no room for the 2 files kept
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text())
    _, newer = wb.dataset("", str(other), str(junk))
    assert [p.name for p in (wb.runs.root / "uploads").iterdir()] == [newer.split("/")[1]]  # the oldest went
    # every folder in use and the total over the bound: a new upload is refused, nothing is written
    monkeypatch.setattr(storage, "VISITORS_QUOTA_BYTES", 10)
    newcomer = Workbench("organism", tmp_path / "runs", HOSTED).for_visitor("newcomer")
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text(data.read_text().splitlines()[1] + "\n")
    with pytest.raises(DatasetError, match="disk space for visitors is full"):
        newcomer.dataset("", str(fresh))
    assert not (newcomer.runs.root / "uploads").exists()


def test_gradios_upload_cache_is_trimmed_oldest_first_by_bytes_and_files(tmp_path: Path) -> None:
    """Issue 47, finding 5: Gradio's own cache took 980 MB in 10 s with no session and kept it an hour."""
    import time

    from workbench.app.storage import trim_gradio_cache

    cache = tmp_path / "gradio"
    paths = []
    for i in range(6):
        path = cache / f"{i:040x}" / f"upload{i}.jsonl"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - 600 + i, time.time() - 600 + i))
        paths.append(path)
    assert trim_gradio_cache(cache, max_bytes=10_000, max_files=100) == []  # within both bounds: nothing goes
    assert trim_gradio_cache(cache, max_bytes=3_500, max_files=100) == paths[:3]  # bytes: the oldest first
    assert trim_gradio_cache(cache, max_bytes=10_000, max_files=2) == paths[3:4]  # files
    assert [p.exists() for p in paths] == [False] * 4 + [True] * 2
    assert trim_gradio_cache(tmp_path / "absent") == []


def test_stream_watch_counts_each_sessions_open_streams_and_reports_the_last_close() -> None:
    """A session's event stream counts as open from its request to the end of its response; only the last close
    is reported (the app stops that visitor's jobs then); without a watch nothing is known and jobs are not held."""
    import asyncio

    from workbench.app.streams import OpenStreams, StreamWatch

    streams, closes, seen = OpenStreams(), [], []
    assert streams.wait_open("s1", timeout=0.01)  # no middleware installed: nothing to wait for
    streams.on_last_close(closes.append)

    async def gradio(scope, receive, send) -> None:  # stands in for the app: records what it sees while streaming
        seen.append((scope["path"], streams.is_open("s1")))

    watch = StreamWatch(gradio, streams)
    stream = {"type": "http", "method": "GET", "path": "/gradio_api/queue/data", "query_string": b"session_hash=s1"}
    other = {**stream, "path": "/gradio_api/queue/join", "method": "POST"}
    assert not streams.wait_open("s1", timeout=0.05)  # watched, never opened: a job would be dropped

    async def run() -> None:
        await watch(other, None, None)
        streams.opened("s1")  # a second stream of the same session, still open after the first ends
        await watch(stream, None, None)
        assert closes == [] and streams.is_open("s1")
        streams.closed("s1")

    asyncio.run(run())
    assert seen == [("/gradio_api/queue/join", False), ("/gradio_api/queue/data", True)]
    assert closes == ["s1"] and not streams.is_open("s1")
