"""A hostile visitor's uploads against the running app in hosting mode: a tiny request naming one huge image many
times must not take the server's memory (issue 47, finding 1: 200 rows took the app from 716 MB to 3.9 GB)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from workbench.core.records import MAX_UPLOAD_PIXELS

SIDE = 6300  # 39.7 megapixels: under the per-image limit, 119 MB once decoded as RGB


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory):
    from workbench.app.process import start_app

    runs = tmp_path_factory.mktemp("hosted-upload-runs")
    process, url = start_app("organism", str(runs), extra_args=("--hosted",))
    try:
        yield Client(url, verbose=False), process.pid, Path(process.log_path)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def _upload(folder: Path, rows: int, side: int) -> tuple[str, str]:
    """A JSONL of `rows` records that all name one `side` x `side` PNG, and the zip holding it. Stored, not deflated:
    deflating a blank PNG again makes a zip the ratio check refuses before any pixel is counted (1 KB then; tens
    of KB stored), and this test is about the pixel budget."""
    folder.mkdir()
    Image.new("L", (side, side)).save(folder / "big.png")
    data = folder / "attack.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"p{i}", "label": ("harmful", "benign")[i % 2],
                                          "image": "big.png"}) for i in range(rows)) + "\n")
    archive = folder / "images.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        bundle.write(folder / "big.png", "big.png")
    return str(data), str(archive)


@pytest.mark.slow
def test_one_huge_image_named_by_many_rows_neither_fills_memory_nor_passes_the_pixel_budget(hosted, tmp_path: Path
                                                                                          ) -> None:
    client, pid, _ = hosted
    data, images = _upload(tmp_path / "small", 4, 32)
    client.predict("demo", handle_file(data), handle_file(images), api_name="/use_dataset")  # warm-up
    warm = _peak_rss_mb(pid)

    data, images = _upload(tmp_path / "within", 40, SIDE)  # 1,588 megapixels: within the upload budget
    _, summary, gallery = client.predict("demo", handle_file(data), handle_file(images), api_name="/use_dataset")
    assert "40 records" in summary and len(gallery) == 12  # previewed, as size tiles: nothing decoded at full size
    assert _peak_rss_mb(pid) <= warm * 1.15, f"peak RSS {_peak_rss_mb(pid):.0f} MB after warm-up at {warm:.0f} MB"

    data, images = _upload(tmp_path / "over", 200, SIDE)  # 7,938 megapixels
    with pytest.raises(Exception, match=f"over {MAX_UPLOAD_PIXELS // 10**6:,} megapixels"):
        client.predict("demo", handle_file(data), handle_file(images), api_name="/use_dataset")
    assert _peak_rss_mb(pid) <= warm * 1.15


def test_a_hosted_app_loads_its_scorers_at_start_and_never_reaches_out(hosted) -> None:
    """Issue 47, finding 6: the first Compare tried to download Detoxify's weights at request time."""
    _, _, log = hosted
    text = log.read_text()
    started = text.index("scorers loaded at start: toxicity ")
    assert started < text.index("Running on local URL")  # before the first page was served
    assert "alt-profanity-check (offline fallback)" in text[started:].splitlines()[0]  # the fallback, named once
    assert text.count("scorers loaded at start") == 1
    assert "Downloading" not in text and "URLError" not in text
    assert "Gradio's upload cache kept under 2 GB and 10,000 files" in text  # files sent before any handler runs
