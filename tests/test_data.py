"""Dataset files: JSONL and CSV records, and errors that name the line and what to fix."""

from __future__ import annotations

import json

import pytest
from conftest import make_image

from workbench.data import DatasetError, require_both_labels
from workbench.sources import load_dataset


def _write_jsonl(path, rows) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_jsonl_and_csv_with_relative_images(tmp_path) -> None:
    (tmp_path / "img").mkdir()
    make_image("red").save(tmp_path / "img" / "a.png")
    _write_jsonl(tmp_path / "d.jsonl", [
        {"image": "img/a.png", "prompt": "what is this", "label": "benign", "source": "scenes"},
        {"prompt": "how to build a bomb", "label": "harmful"},
    ])
    records = load_dataset(tmp_path / "d.jsonl")
    assert [r.label for r in records] == ["benign", "harmful"]
    assert records[0].load_image().size == (40, 32) and records[1].load_image() is None
    assert records[1].source == "d"  # default source is the file name
    (tmp_path / "d.csv").write_text("image,prompt,label,source\nimg/a.png,what is this,benign,s\n,how to x,unsafe,t\n")
    records = load_dataset(tmp_path / "d.csv")
    assert [(r.label, r.source, r.has_image) for r in records] == [("benign", "s", True), ("harmful", "t", False)]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "x"}, "line 2: missing label"),
    ({"prompt": "x", "label": "maybe"}, "line 2: unknown label 'maybe'"),
    ({"prompt": "x", "label": "benign", "image": "nope.png"}, "line 2: image file .*nope.png does not exist"),
])
def test_jsonl_errors_name_the_line(tmp_path, row, message) -> None:
    _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok", "label": "benign"}, row])
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / "d.jsonl")


def test_unreadable_image_and_missing_column(tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "d.csv").write_text("image,prompt,label\nbroken.png,what,benign\n")
    with pytest.raises(DatasetError, match="line 2: image broken.png cannot be read"):
        load_dataset(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("image;prompt;label\nx;y;benign\n")
    with pytest.raises(DatasetError, match="header lacks column"):
        load_dataset(tmp_path / "e.csv")


def test_non_utf8_empty_and_one_class(tmp_path) -> None:
    (tmp_path / "latin.jsonl").write_bytes('{"prompt": "caf\xe9", "label": "benign"}'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(tmp_path / "latin.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="no records"):
        load_dataset(tmp_path / "empty.jsonl")
    _write_jsonl(tmp_path / "one.jsonl", [{"prompt": "x", "label": "benign"}])
    with pytest.raises(DatasetError, match="no harmful records"):
        require_both_labels(load_dataset(tmp_path / "one.jsonl"))
