"""Dataset files: JSONL and CSV records, and errors that name the line and what to fix."""

from __future__ import annotations

import json

import pytest
from conftest import make_image

from workbench.core import records as data
from workbench.core.records import DatasetError, read_csv, read_jsonl, require_both_labels
from workbench.data.sources import load_dataset


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
    ({"prompt": "x", "label": "benign", "image": "nope.png"}, "line 2: image file 'nope.png' does not exist"),
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


def test_a_csv_with_carriage_returns_only_reads_its_rows(tmp_path) -> None:
    """Excel for Mac's old "CSV" ends lines with a bare CR: the same rows, and a quoted CR stays in its prompt."""
    path = tmp_path / "mac.csv"
    path.write_bytes(b'prompt,label\rhow do i bake,benign\r"two\rlines",harmful\r')
    assert [(r.prompt, r.label) for r in read_csv(path)] == [("how do i bake", "benign"), ("two\rlines", "harmful")]


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

    from workbench.core.records import checked_image, open_image

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
    from workbench.core.records import open_image

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
    for attempt, message in ((open_image, "the image cannot be read"),
                             (read_csv, "d.csv line 2: image a.png cannot be read")):
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


def test_a_source_argument_keeps_its_colons_and_json_or_csv_uploads_get_the_same_caps(tmp_path, monkeypatch) -> None:
    """`advbench:C:/data/copy` (a Windows path) must reach the loader whole; `.json` files holding JSON lines load;
    an upload's caps hold for every format."""
    from workbench.data.sources import SOURCES, register_source

    seen = []
    register_source("colons", lambda arg: seen.append(arg) or [data.Record("p", "benign")], "argument echo")
    try:
        load_dataset("colons:C:/data/copy")
    finally:
        del SOURCES["colons"]
    assert seen == ["C:/data/copy"]
    (tmp_path / "a.json").write_text('{"prompt": "p", "label": "harmful"}\n{"prompt": "q", "label": "benign"}\n')
    (tmp_path / "a.csv").write_text("prompt,label\np,harmful\nq,benign\n")
    for name in ("a.json", "a.csv"):
        assert [r.prompt for r in load_dataset(tmp_path / name)] == ["p", "q"]
        monkeypatch.setattr(data, "MAX_UPLOAD_RECORDS", 1)
        with pytest.raises(DatasetError, match=f"^{name} has more than 1 records"):
            load_dataset(tmp_path / name, confine=True)
        assert len(load_dataset(tmp_path / name)) == 2  # not an upload: no cap
        monkeypatch.undo()


def test_record_fields_reference_behavior_and_exact_refusals(tmp_path, monkeypatch) -> None:
    """`reference` (or `answer`) and `behavior` reach the record (judges and accuracy read them); empty ones are
    None; a field at the upload limit is accepted, one past it is not; refusals name what to fix."""
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "p", "label": "benign", "reference": "red", "behavior": "make x"},
            {"prompt": "q", "label": "harmful", "answer": 3, "behavior": ""},
            {"prompt": "r", "label": "benign", "reference": "", "answer": "ignored"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = read_jsonl(path)
    assert [(r.reference, r.behavior) for r in records] == [("red", "make x"), ("3", None), (None, None)]
    monkeypatch.setattr(data, "MAX_UPLOAD_FIELD_CHARS", 7)
    path.write_text('{"prompt": "1234567", "label": "benign"}\n')
    assert read_jsonl(path, confine=True)[0].prompt == "1234567"
    path.write_text('{"prompt": "12345678", "label": "benign"}\n')
    assert read_jsonl(path)[0].prompt == "12345678"  # a researcher's own file: no field cap
    with pytest.raises(DatasetError, match="^d.jsonl line 1: prompt is 8 characters; keep every field under 7 "):
        read_jsonl(path, confine=True)
    path.write_text('{"prompt": " ", "label": ""}\n')
    with pytest.raises(DatasetError) as error:
        read_jsonl(path)
    assert str(error.value) == ("d.jsonl line 1: missing prompt, label (each record needs prompt and label; image "
                                "and source are optional)")
    monkeypatch.undo()
    make_image("red").save(tmp_path / "outside.png")
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner/d.jsonl").write_text('{"prompt": "p", "label": "benign", "image": "../outside.png"}\n')
    with pytest.raises(DatasetError) as error:
        read_jsonl(tmp_path / "inner/d.jsonl", confine=True)
    assert str(error.value) == ("d.jsonl line 1: image path '../outside.png' leaves the dataset's folder; put the "
                                "images beside the file (uploads may only reference their own zip's images)")


def test_content_keys_follow_what_the_model_sees_and_do_not_drift(tmp_path) -> None:
    """record_key (clusters, the leakage guard, resumable caches) reads prompt and image pixels, not label or
    source; dataset_hash (provenance) reads all four. Both are 16 hex characters and stable across versions."""
    from PIL import Image

    from workbench.core.records import Record, dataset_hash, record_key

    text = Record("how do i bake bread", "benign", "demo")
    assert record_key(text) == "8077c378ec7630d8" and dataset_hash([text]) == "8f8f29def0d2a11b"
    assert record_key(Record("how do i bake bread", "harmful", "other")) == record_key(text)
    assert dataset_hash([Record("how do i bake bread", "harmful", "demo")]) != dataset_hash([text])
    assert dataset_hash([Record("how do i bake bread", "benign", "other")]) != dataset_hash([text])
    make_image("red").save(tmp_path / "a.png")
    on_disk = Record("what colour", "benign", image_path=str(tmp_path / "a.png"))
    key, hashed = record_key(on_disk), dataset_hash([on_disk])
    make_image("blue").save(tmp_path / "a.png")
    assert record_key(on_disk) != key and dataset_hash([on_disk]) != hashed  # the pixels count
    red, blue = make_image("red"), make_image("blue")
    inline = [Record("what colour", "benign", image_data=image) for image in (red, blue, red.convert("RGBA"))]
    keys = [record_key(r) for r in inline]
    assert keys[0] != keys[1] and keys[0] == keys[2] != record_key(Record("what colour", "benign"))  # RGB pixels
    assert dataset_hash(inline[:1]) != dataset_hash(inline[1:2])
    assert inline[2].load_image().mode == "RGB" and isinstance(inline[2].load_image(), Image.Image)


def test_a_record_limit_covers_every_label_source_and_harmful_behaviour() -> None:
    """`--limit 20` on the organism covers its 10 harmful activities and every source; seeded (issue 45)."""
    from collections import Counter

    from workbench.core.sampling import composition, even_split, stratified_sample

    records = load_dataset("organism:test")
    sample = stratified_sample(records, 20)
    assert len(sample) == 20 and sample == stratified_sample(records, 20)
    assert len({r.behavior for r in sample if r.label == "harmful"}) == 10
    assert {(r.label, r.source) for r in sample} == {(r.label, r.source) for r in records}
    assert [records.index(r) for r in sample] == sorted(records.index(r) for r in sample)  # the set's order
    assert stratified_sample(records, 20, seed=1) != sample and stratified_sample(records, None) == records
    assert composition(sample, len(records))["harmful_behaviours"] == 10
    assert Counter(r.label for r in stratified_sample(records, 7)) == {"harmful": 3, "benign": 4} or Counter(
        r.label for r in stratified_sample(records, 7)) == {"harmful": 4, "benign": 3}
    assert even_split(10, [2, 100, 100], [0, 1, 2]) == [2, 4, 4] and even_split(5, [1, 1], [1, 0]) == [1, 1]
    with pytest.raises(ValueError, match="at least 1"):
        stratified_sample(records, 0)


@pytest.mark.parametrize("name, body", [
    ("crlf.jsonl", b'{"prompt": "a", "label": "harmful"}\r\n{"prompt": "b", "label": "benign"}\r\n'),
    ("bom.jsonl", b'\xef\xbb\xbf{"prompt": "a", "label": "harmful"}\n{"prompt": "b", "label": "benign"}'),
    ("last.jsonl", b'{"prompt": "a", "label": "harmful"}\n{"prompt": "b", "label": "benign"}'),
    ("bom.csv", b"\xef\xbb\xbfprompt,label\r\na,harmful\r\nb,benign"),
    ("last.csv", b"prompt,label\na,harmful\nb,benign"),
])
def test_line_endings_byte_order_marks_and_a_missing_final_newline_keep_every_row(tmp_path, name, body) -> None:
    """Files as editors and spreadsheets write them: CRLF, a UTF-8 byte order mark, no newline after the last row;
    every row is read, the last one included, and the first column's name is not polluted by the mark."""
    path = tmp_path / name
    path.write_bytes(body)
    assert [(r.prompt, r.label) for r in load_dataset(str(path))] == [("a", "harmful"), ("b", "benign")]


def test_tab_separated_files_are_refused_with_what_to_do(tmp_path) -> None:
    tsv = tmp_path / "t.tsv"
    tsv.write_text("prompt\tlabel\na\tharmful\n")
    with pytest.raises(DatasetError, match="unknown dataset format; give a .jsonl or .csv file"):
        load_dataset(str(tsv))
    named_csv = tmp_path / "t.csv"
    named_csv.write_text("prompt\tlabel\na\tharmful\n")
    with pytest.raises(DatasetError, match=r"line 1: header lacks column\(s\) prompt, label; found prompt\tlabel "
                                           r"\(a comma-separated header is expected\)"):
        load_dataset(str(named_csv))
