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
    assert not (runs / "uploads").exists() or not any((runs / "uploads").iterdir())  # nothing stays behind
    named = tmp_path / "named.jsonl"
    injected = '<img src="https://evil.example/x.png"><div style="position:fixed">log in</div>'
    named.write_text("\n".join(json.dumps({"prompt": p, "label": lab, "source": injected})
                               for p, lab in (("a", "harmful"), ("b", "benign"))) + "\n")
    label, summary, _ = client.predict("demo", handle_file(str(named)), None, api_name="/use_dataset")
    assert "<img" not in summary and "<div" not in summary and "&lt;img" in summary
    staged = runs / label
    assert staged.is_file()
    with pytest.raises(urllib.error.HTTPError) as error:  # the runs folder is never served directly
        urllib.request.urlopen(f"{url}gradio_api/file={staged}", timeout=10)
    assert error.value.code == 403
