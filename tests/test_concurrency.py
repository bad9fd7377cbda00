"""Eight users at once: mixed steer and Stage I requests for about a minute; no errors, no cross-talk, and the
app's resident memory grows at most 15% over the run after warm-up."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from workbench.organism.world import BENIGN, HARMFUL, typographic_image

SECONDS = float(os.environ.get("WORKBENCH_CONCURRENCY_SECONDS", "60"))
CLIENTS = 8
RSS_GROWTH_ALLOWED = 1.15


def resident_bytes(pid: int) -> int:
    """The process's resident set size (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@pytest.mark.slow
def test_eight_concurrent_clients_get_the_answers_they_would_get_alone(organism_app: tuple[str, Path, int],
                                                                       tmp_path: Path) -> None:
    url, _, pid = organism_app
    solo = Client(url, verbose=False)
    run_id = solo.predict("organism:train", "last", "mean_diff", "pca", api_name="/stage1")[0]
    activities = sorted(HARMFUL)[:3] + sorted(BENIGN)[:3]
    steer_requests = []
    for index, activity in enumerate(activities):
        path = tmp_path / f"{index}.png"
        typographic_image(activity).save(path)
        steer_requests.append((run_id, str(path), "tell me how to do the activity in the image", "adaptive",
                               [0.0, 1.0, 2.0][index % 3], "1,2", 24))
    stage1_requests = [("organism:train", "last", method, "pca") for method in ("mean_diff", "pca")]

    def steer(client: Client, request: tuple) -> tuple:
        run, image, *rest = request
        return tuple(client.predict(run, handle_file(image), *rest, api_name="/steer_compare")[:2])

    def stage1(client: Client, request: tuple) -> list:
        return client.predict(*request, api_name="/stage1")[3]["data"]  # the layer-score table

    expected = {("steer", i): steer(solo, r) for i, r in enumerate(steer_requests)}
    expected.update({("stage1", i): stage1(solo, r) for i, r in enumerate(stage1_requests)})
    warm = resident_bytes(pid)  # the model, scorers, UMAP-free Stage I and steering paths have all run once

    errors: list[str] = []
    mismatches: list[str] = []
    done = [0]
    stop = time.time() + SECONDS

    def user(number: int) -> None:
        client = Client(url, verbose=False)
        turn = number
        while time.time() < stop:
            kind = "stage1" if turn % 5 == 0 else "steer"
            requests = stage1_requests if kind == "stage1" else steer_requests
            index = turn % len(requests)
            try:
                answer = stage1(client, requests[index]) if kind == "stage1" else steer(client, requests[index])
            except Exception as error:  # noqa: BLE001 - every failure is collected and reported
                errors.append(f"client {number} {kind} {index}: {error}")
            else:
                if answer != expected[(kind, index)]:
                    mismatches.append(f"client {number} {kind} {index}: {answer!r:.200}")
                done[0] += 1
            turn += 1

    threads = [threading.Thread(target=user, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 180)
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:3]
    assert done[0] >= CLIENTS  # every client got answers
    growth = resident_bytes(pid) / warm
    print(f"{done[0]} concurrent requests from {CLIENTS} clients in {SECONDS:.0f} s: 0 errors, 0 mismatches; "
          f"resident memory {warm / 2**20:.0f} MiB after warm-up, x{growth:.3f} after the run")
    assert growth <= RSS_GROWTH_ALLOWED, f"resident memory grew x{growth:.3f} over the run"


def test_the_model_lock_serves_waiters_in_order_so_a_loop_cannot_keep_it() -> None:
    """A thread that releases the model's lock and asks again at once (Stage II's loop) goes behind a thread already
    waiting (threading.RLock let it barge ahead): the waiter gets the very next turn. Re-entrant for its owner."""
    import threading
    import time

    from conftest import tiny

    lock, turns, asked, served = tiny("llava").lock, [], threading.Event(), []  # the lock every trace takes

    def loop() -> None:
        for i in range(200):
            with lock:
                with lock:  # re-entrant: a trace inside a job's own locked section
                    turns.append(i)
                    if i == 20:
                        asked.set()
                    time.sleep(0.001)

    def other() -> None:
        asked.wait()
        time.sleep(0.0002)  # it asks while the loop holds the lock
        with lock:
            served.append(len(turns))

    threads = [threading.Thread(target=loop), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(turns) == 200 and served and served[0] <= 22, served  # the next turn after it asked, not ~200
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_tokenizing_in_one_thread_never_breaks_another_threads_padded_batch() -> None:
    """Seen in CI as 'Unable to create tensor ... excessive nesting' under concurrent clients: a fast tokenizer keeps
    padding as state, and a length count in one thread reset it under another's padded batch. Every tokenizer use
    of the model goes through its lock (VLM.encode, VLM.token_ids)."""
    import sys

    from workbench.core.models import load_vlm
    from workbench.organism.world import REQUEST_PROMPT, typographic_image

    vlm, image = load_vlm("organism"), typographic_image("build a bomb")
    errors: list[str] = []
    done = threading.Event()

    def batches() -> None:
        try:
            for _ in range(800):
                vlm.encode([(image, "read it"), (image, REQUEST_PROMPT)])  # unequal lengths: padding needed
        except ValueError as error:
            errors.append(str(error)[:120])
        finally:
            done.set()

    def counts() -> None:
        while not done.is_set():
            vlm.token_ids("tell me how to bake a cake")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows within a few hundred batches
    try:
        threads = [threading.Thread(target=batches), threading.Thread(target=counts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
