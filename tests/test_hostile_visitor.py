"""A hostile visitor against the running app in hosting mode (`--hosted`, loopback only, bounded): file reads,
stored HTML, model switching, disk amplification, oversized prompts, direct file URLs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from workbench.app.hosting import MAX_PROMPT_CHARS, SERVER_PATH_REFUSED


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory):
    from workbench.app.process import start_app

    runs = tmp_path_factory.mktemp("hosted-runs")
    process, url = start_app("organism", str(runs), extra_args=("--hosted",))
    try:
        yield Client(url, verbose=False), url, runs
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_server_files_cannot_be_read_or_probed(hosted, tmp_path: Path) -> None:
    client, _, _ = hosted
    secret = tmp_path / "users.csv"
    secret.write_text("prompt,label,password_hash,email\nx,harmful,abc,a@b\n")
    messages = set()
    for spec in (str(secret), str(tmp_path / "absent.csv"), "advbench:/usr", "/etc/passwd"):
        with pytest.raises(Exception) as error:
            client.predict(spec, None, None, api_name="/use_dataset")
        messages.add(str(error.value))
        with pytest.raises(Exception, match="does not open paths on its server"):
            client.predict(None, spec, 5, "adaptive", 1.0, "", 8, "auto", api_name="/evaluate")
    assert len(messages) == 1 and SERVER_PATH_REFUSED in messages.pop()  # existing or not: the same words


def test_the_model_is_fixed_and_prompts_are_capped(hosted) -> None:
    client, _, _ = hosted
    with pytest.raises(Exception, match="model is fixed by the host"):
        client.predict("tiny-random:llava", api_name="/load_model")
    run_id = client.predict("organism:train", "last", "mean_diff", "pca", api_name="/stage1")[0]
    with pytest.raises(Exception, match=f"keep it under {MAX_PROMPT_CHARS:,}"):
        client.predict(run_id, None, "x" * (MAX_PROMPT_CHARS + 1), "adaptive", 1.0, "2", 8, api_name="/steer_compare")


def test_uploads_stay_private_rejected_ones_leave_nothing_and_names_stay_text(hosted, tmp_path: Path) -> None:
    client, url, runs = hosted
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "label": "harmful", "image": "../../../../etc/hostname"}) + "\n")
    with pytest.raises(Exception, match="leaves the dataset's folder"):
        client.predict("demo", handle_file(str(bad)), None, api_name="/use_dataset")
    assert not [p for p in runs.rglob("uploads/*")]  # nothing stays behind
    named = tmp_path / "named.jsonl"
    injected = '<img src="https://evil.example/x.png"><div style="position:fixed">log in</div>'
    named.write_text("\n".join(json.dumps({"prompt": p, "label": lab, "source": injected})
                               for p, lab in (("a", "harmful"), ("b", "benign"))) + "\n")
    label, summary, _ = client.predict("demo", handle_file(str(named)), None, api_name="/use_dataset")
    assert "<img" not in summary and "<div" not in summary and "&lt;img" in summary
    staged, = runs.glob(f"visitors/*/{label}")  # in this visitor's own folder
    with pytest.raises(urllib.error.HTTPError) as error:  # the runs folder is never served directly
        urllib.request.urlopen(f"{url}gradio_api/file={staged}", timeout=10)
    assert error.value.code == 403


def _visitor_runs(runs: Path, kind: str) -> list[Path]:
    return sorted(runs.glob(f"visitors/*/{kind}-*"))


def test_another_visitors_runs_and_uploads_cannot_be_listed_or_opened(hosted, tmp_path: Path) -> None:
    _, url, runs = hosted
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    run_id = alice.predict("organism:train", "last", "mean_diff", "pca", api_name="/stage1")[0]
    mine = tmp_path / "mine.jsonl"
    rows = (("a", "harmful"), ("b", "benign"))
    mine.write_text("\n".join(json.dumps({"prompt": p, "label": lab}) for p, lab in rows))
    label = alice.predict("demo", handle_file(str(mine)), None, api_name="/use_dataset")[0]
    assert alice.predict(run_id, "pca", api_name="/open_stage1")[0] == run_id  # its owner reopens it
    assert not (runs / run_id).exists()  # not in the shared folder either
    attempts = {
        "open": lambda: bob.predict(run_id, "pca", api_name="/open_stage1"),
        "steer": lambda: bob.predict(run_id, None, "hello", "adaptive", 1.0, "2", 8, api_name="/steer_compare"),
        "export": lambda: bob.predict(run_id, api_name="/export_vectors"),
        "notebook": lambda: bob.predict(run_id, api_name="/export_notebook"),
        "evaluate": lambda: bob.predict(run_id, "organism:test", 4, "adaptive", 1.0, "", 8, "auto",
                                        api_name="/evaluate"),
        "stage2": lambda: bob.predict(run_id, "organism:train", 1, 2, 1, "dpo", "initial", "adaptive", 1.0, "", 0.05,
                                      0.5, "", api_name="/stage2"),
        "upload": lambda: bob.predict(label, "last", "mean_diff", "pca", api_name="/stage1"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(Exception, match="does not exist|not an upload|Stage I first") as error:
            attempt()
        assert run_id not in str(error.value) or "does not exist" in str(error.value), name
    assert len(_visitor_runs(runs, "stage2")) == 0  # bob's Stage II was refused before creating anything


def test_a_job_stops_when_its_visitor_goes_away(hosted) -> None:
    import time

    _, url, runs = hosted
    visitor = Client(url, verbose=False)
    run_id = visitor.predict("organism:train", "last", "mean_diff", "pca", api_name="/stage1")[0]
    job = visitor.submit(run_id, "organism:train", 500, 2, 2, "dpo", "initial", "adaptive", 1.0, "1,2", 0.05, 0.5, "",
                         api_name="/stage2")
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline and metrics is None:
        found = [p / "metrics.jsonl" for p in _visitor_runs(runs, "stage2") if (p / "metrics.jsonl").is_file()]
        metrics = found[0] if found and found[0].read_text().strip() else None
        time.sleep(0.2)
    assert metrics is not None, "Stage II never reported a step"
    with pytest.raises(Exception, match="does not exist"):  # another visitor cannot add a trainer to it
        Client(url, verbose=False).predict(metrics.parent.name, api_name="/stage2_resume")
    job.cancel()  # the visitor's connection to the job goes away (a closed tab also stops it, via unload)
    left = time.time()
    while time.time() - left < 30 and "running" in json.loads((metrics.parent / "run.json").read_text()).get("status",
                                                                                                           ""):
        time.sleep(0.2)
    stopped_after = time.time() - left
    status = json.loads((metrics.parent / "run.json").read_text())["status"]
    steps = len(metrics.read_text().splitlines())
    time.sleep(3)
    assert status.startswith("stopped at step"), status
    assert stopped_after < 15 and len(metrics.read_text().splitlines()) == steps < 500  # no step after it stopped


def test_one_visitors_flood_is_refused_at_once_and_another_visitor_is_served_meanwhile(hosted) -> None:
    """Issue 47, finding 3: 120 Compare requests from one visitor made another's take 135 s instead of 2.3 s, and a
    Stage II nobody watched held the model. Hosted, a visitor runs one model job at a time: with their Stage II
    training, their twenty Compares are refused at once and another visitor's Compare is served between its steps."""
    import statistics
    import time

    _, url, runs = hosted
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    mine = alice.predict("organism:train", "last", "mean_diff", "pca", api_name="/stage1")[0]
    theirs = bob.predict("organism:train", "last", "mean_diff", "pca", api_name="/stage1")[0]

    def compare(client: Client, run_id: str) -> float:
        started = time.time()
        client.predict(run_id, None, "tell me how to build a bomb", "adaptive", 1.0, "2", 24,
                       api_name="/steer_compare")
        return time.time() - started

    compare(bob, theirs)  # warm-up
    idle = statistics.median(compare(bob, theirs) for _ in range(3))
    before = set(_visitor_runs(runs, "stage2"))  # earlier tests' runs: only alice's new one says she is training
    training = alice.submit(mine, "organism:train", 500, 2, 2, "dpo", "initial", "adaptive", 1.0, "1,2", 0.05, 0.5,
                            "", api_name="/stage2")
    deadline = time.time() + 120
    while time.time() < deadline and not any((p / "metrics.jsonl").is_file()
                                             for p in set(_visitor_runs(runs, "stage2")) - before):
        time.sleep(0.2)
    assert time.time() < deadline, "alice's Stage II never reported a step"
    flood = [alice.submit(mine, None, "tell me how to build a bomb", "adaptive", 1.0, "2", 24,
                          api_name="/steer_compare") for _ in range(20)]
    busy = compare(bob, theirs)
    answers = []
    for job in flood:
        try:
            job.result(timeout=60)
            answers.append("ran")
        except Exception as error:  # noqa: BLE001 - the refusal's words are what is checked
            answers.append("one job" if "one job at a time per visitor" in str(error) else str(error)[:80])
    training.cancel()
    assert answers == ["one job"] * 20, answers  # refused at once, none queued ahead of others
    print(f"bob's Compare: {idle:.2f} s idle, {busy:.2f} s while alice trains and floods ({busy / idle:.2f}x)")
    assert busy <= 2 * idle + 2.0, (idle, busy)  # served between alice's steps (slack for a noisy machine)


def _join_without_listening(url: str, api_name: str, session: str) -> str:
    """Join Gradio's queue as a raw client would, with every input at its default, never opening the event
    stream; returns the event id."""
    config = json.loads(urllib.request.urlopen(f"{url}config", timeout=10).read())
    dependency, = [d for d in config["dependencies"] if d.get("api_name") == api_name.strip("/")]
    defaults = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
    body = json.dumps({"data": [defaults[i] for i in dependency["inputs"]], "fn_index": dependency["id"],
                       "session_hash": session, "event_data": None, "trigger_id": None}).encode()
    request = urllib.request.Request(f"{url}gradio_api/queue/join", data=body,
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())["event_id"]


def test_a_job_nobody_listens_to_is_dropped_before_it_runs(hosted) -> None:
    """Issue 47, finding 3: a queued Stage II whose client never opened the event stream trained 202 steps in 5
    minutes. Hosted, a job starts only while its visitor's stream is open: joined and never listened to, nothing
    runs (the same Stage I, listened to, makes its run in a few seconds: the test above)."""
    import time

    from workbench.app.streams import STREAM_GRACE_S

    _, url, runs = hosted
    before = set(_visitor_runs(runs, "stage1"))
    for index in range(3):
        _join_without_listening(url, "/stage1", f"deaf{index}xyz")
    time.sleep(STREAM_GRACE_S + 8)  # the grace a browser gets to open its stream, and a Stage I's time after it
    assert set(_visitor_runs(runs, "stage1")) == before  # no run folder: no job started
