"""Dataset files: JSONL and CSV records, and errors that name the line and what to fix."""

from __future__ import annotations

import json

import pytest
from conftest import make_image

from workbench import data
from workbench.data import DatasetError, read_csv, read_jsonl, require_both_labels
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


def test_csv_keeps_the_prompt_byte_exact_strips_the_rest_and_names_its_source(tmp_path) -> None:
    path = tmp_path / "mine.csv"
    path.write_bytes(b'prompt,Label , answer\n"  two\r\nlines ", Harmful ,  42 \n')
    [record] = read_csv(path)
    assert (record.prompt, record.label, record.source, record.reference) == ("  two\r\nlines ", "harmful", "mine",
                                                                              "42")


def test_csv_header_and_size_errors_say_what_was_found(tmp_path, monkeypatch) -> None:
    (tmp_path / "e.csv").write_text("image;prompt;label\nx;y;benign\n")
    with pytest.raises(DatasetError) as error:
        read_csv(tmp_path / "e.csv")
    assert str(error.value) == ("e.csv line 1: header lacks column(s) prompt, label; found image;prompt;label "
                                "(a comma-separated header is expected)")
    (tmp_path / "f.csv").write_text("text,target\nx,y\n")
    with pytest.raises(DatasetError, match=r"^f.csv line 1: header lacks column\(s\) prompt, label; found text, targ"):
        read_csv(tmp_path / "f.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DatasetError, match=r"^blank.csv line 1: header lacks column\(s\) prompt, label; found nothing"):
        read_csv(tmp_path / "blank.csv")
    (tmp_path / "header.csv").write_text("prompt,label\n")
    with pytest.raises(DatasetError, match="^header.csv: no records$"):
        read_csv(tmp_path / "header.csv")
    long = tmp_path / "long.csv"
    long.write_text("prompt,label\n" + "x" * (data.MAX_UPLOAD_FIELD_CHARS + 1) + ",benign\na,harmful\nb,benign\n")
    assert len(read_csv(long)) == 3  # a file the researcher gave: no upload caps
    with pytest.raises(DatasetError, match="^long.csv line 2: prompt is 4,001 characters"):
        read_csv(long, confine=True)
    monkeypatch.setattr(data, "MAX_UPLOAD_RECORDS", 1)
    long.write_text("prompt,label\na,harmful\nb,benign\n")
    with pytest.raises(DatasetError, match="^long.csv has more than 1 records; upload a sample of it$"):
        read_csv(long, confine=True)
    assert len(read_csv(long)) == 2
    lines = tmp_path / "lines.jsonl"  # the same caps for JSONL: a researcher's own file has none
    lines.write_text('{"prompt": "a", "label": "harmful"}\n{"prompt": "b", "label": "benign"}\n')
    assert len(read_jsonl(lines)) == 2
    with pytest.raises(DatasetError, match="^lines.jsonl has more than 1 records; upload a sample of it$"):
        read_jsonl(lines, confine=True)
    monkeypatch.setattr(data, "MAX_UPLOAD_RECORDS", 2)  # exactly at the cap still loads
    assert len(read_jsonl(lines, confine=True)) == len(read_csv(long, confine=True)) == 2
    lines.write_text('\n  [{"prompt": "a", "label": "harmful"}]\n')
    with pytest.raises(DatasetError, match="^lines.jsonl: this is a JSON array; write one JSON object per line"):
        read_jsonl(lines)


def test_jsonl_lines_end_only_at_newlines(tmp_path) -> None:
    """A raw U+2028 is legal inside a JSON string (json.dumps(ensure_ascii=False) writes one); \\r\\n ends a line."""
    path = tmp_path / "d.jsonl"
    path.write_bytes('{"prompt": "one\u2028two", "label": "benign"}\r\n\r\n{"prompt": "x", "label": "harmful"}\r\n'
                     .encode())
    assert [r.prompt for r in read_jsonl(path)] == ["one\u2028two", "x"]
    path.write_bytes(b'{"prompt": "a", "label": "benign"}\r\n{"prompt": \r\n')
    with pytest.raises(DatasetError, match="^d.jsonl line 2: not valid JSON"):
        read_jsonl(path)


def test_a_users_image_opens_as_rgb_or_says_what_to_fix(tmp_path, monkeypatch) -> None:
    from PIL import Image

    from workbench.data import checked_image, open_image

    assert open_image(None) is None and open_image("") is None and checked_image(None) is None
    make_image("red").convert("RGBA").save(tmp_path / "a.png")
    opened = open_image(str(tmp_path / "a.png"))
    assert (opened.mode, opened.size, opened.getpixel((0, 0))) == ("RGB", (40, 32), (255, 0, 0))
    assert open_image(tmp_path / "a.png").tobytes() == opened.tobytes()
    given = open_image(Image.open(tmp_path / "a.png"))
    assert given.mode == "RGB" and given.tobytes() == opened.tobytes()
    cases = [(tmp_path, f"{tmp_path.name} is a folder; give an image file"),
             (tmp_path / "b.png", f"image file {tmp_path / 'b.png'} does not exist")]
    (tmp_path / "c.png").write_bytes(b"not an image")
    cases.append((tmp_path / "c.png",
                  "the image cannot be read (corrupt, empty or not an image); upload a PNG or JPEG"))
    for path, message in cases:
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            open_image(path)
        assert str(error.value) == message
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1280)  # exactly 40 x 32 still opens
    assert open_image(tmp_path / "a.png").size == (40, 32) and checked_image(opened).size == (40, 32)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1279)
    for attempt in (lambda: open_image(tmp_path / "a.png"), lambda: checked_image(opened)):
        with pytest.raises(ValueError) as error:
            attempt()
        assert str(error.value) == "the image is 40x32; resize it below 1,279 pixels"
    monkeypatch.undo()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # PIL's own bomb guard (over twice this) trips before ours
    with pytest.raises(ValueError) as error:
        open_image(tmp_path / "a.png")
    assert str(error.value) == "the image is too large to open safely; resize it below 40 megapixels"


def test_past_the_limit_only_the_header_is_read_and_the_size_is_what_the_user_is_told(tmp_path, monkeypatch) -> None:
    """A decompression bomb must not be decoded: past the limit a corrupt body is never read, so the message names
    the size (what to fix first); at the limit the body is decoded and its corruption reported."""
    from workbench.data import open_image

    make_image("red").save(tmp_path / "a.png")  # 40 x 32 = 1,280 pixels
    raw = bytearray((tmp_path / "a.png").read_bytes())
    body = raw.index(b"IDAT") + 4
    raw[body:body + 8] = b"\xff" * 8  # the compressed pixels (and the chunk's checksum) are now wrong
    (tmp_path / "a.png").write_bytes(bytes(raw))
    (tmp_path / "d.csv").write_text("image,prompt,label\na.png,what,benign\n")
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1279)
    for attempt, message in ((open_image, "the image is 40x32; resize it below 1,279 pixels"),
                             (read_csv, "d.csv line 2: image a.png is 40x32; resize it below 1,279 pixels")):
        with pytest.raises(ValueError) as error:
            attempt(tmp_path / ("a.png" if attempt is open_image else "d.csv"))
        assert str(error.value) == message
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1280)
    for attempt, message in ((open_image, "the image cannot be read"), (read_csv, "d.csv line 2: image a.png cannot be read")):
        with pytest.raises(ValueError) as error:
            attempt(tmp_path / ("a.png" if attempt is open_image else "d.csv"))
        assert str(error.value).startswith(message)


def test_a_dataset_image_at_the_pixel_limit_loads_and_one_past_it_is_refused(tmp_path, monkeypatch) -> None:
    make_image("red").save(tmp_path / "a.png")  # 40 x 32 = 1,280 pixels
    (tmp_path / "d.csv").write_text("image,prompt,label\na.png,what,benign\n")
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1280)
    assert read_csv(tmp_path / "d.csv")[0].has_image
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1279)
    with pytest.raises(DatasetError) as error:
        read_csv(tmp_path / "d.csv")
    assert str(error.value) == "d.csv line 2: image a.png is 40x32; resize it below 1,279 pixels"
