"""Utility benchmarks (MMBench, ScienceQA-IMG, MM-Vet) on small copies in their authors' layouts, decoys
included, and how their answers are scored."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from conftest import make_image

from workbench.core.records import DatasetError, Record
from workbench.data.catalog import load_known
from workbench.data.utility import CHOICE_INSTRUCTION, extract_choice, is_correct, token_f1


def _b64(colour: str) -> str:
    buffer = io.BytesIO()
    make_image(colour, (20, 20)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _tsv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def _mmbench_row(index: int, image: str, answer: str | None = "B", hint: str = "nan") -> dict:
    row = {"index": index, "question": f"Which colour is shown ({index})?", "hint": hint, "A": "red", "B": "blue",
           "C": "green", "D": "nan", "image": image, "category": "colour", "l2-category": "perception",
           "split": "dev"}
    if answer is not None:
        row["answer"] = answer
    return row


def test_mmbench_dev_tsv_with_inline_and_referenced_images(tmp_path: Path) -> None:
    folder = tmp_path / "mmbench"
    folder.mkdir()
    _tsv(folder / "MMBench_DEV_EN.tsv", [_mmbench_row(0, _b64("blue")), _mmbench_row(1, "0", "A", "A hint\twith tab"),
                                         _mmbench_row(2, _b64("red"), "C")])
    _tsv(folder / "MMBench_TEST_EN.tsv", [_mmbench_row(0, _b64("green"), None)])  # decoy: no answers
    _tsv(folder / "MMBench_DEV_CN.tsv", [_mmbench_row(0, _b64("green"), "A")])  # decoy: another language
    records = load_known("mmbench", folder)
    assert [r.reference for r in records] == ["B", "A", "C"] and {r.source for r in records} == {"mmbench"}
    assert records[0].options == ("red", "blue", "green")  # "nan" D is no option
    assert records[0].prompt.endswith(CHOICE_INSTRUCTION) and "B. blue" in records[0].prompt
    assert records[1].prompt.startswith("Context: A hint\twith tab")
    assert records[1].load_image().getpixel((0, 0)) == records[0].load_image().getpixel((0, 0))  # by index
    with pytest.raises(DatasetError, match="not a mmbench rows file"):
        load_known("mmbench", folder / "MMBench_TEST_EN.tsv")
    _tsv(folder / "MMBench_DEV_EN_V11.tsv", [_mmbench_row(0, _b64("blue"))])
    with pytest.raises(DatasetError, match="more than one mmbench version"):
        load_known("mmbench", folder)


def test_mmbench_reference_to_a_missing_row_is_loud(tmp_path: Path) -> None:
    _tsv(tmp_path / "MMBench_DEV_EN.tsv", [_mmbench_row(0, "7")])
    with pytest.raises(DatasetError, match="names image '7', which no row has"):
        load_known("mmbench", tmp_path)
    _tsv(tmp_path / "MMBench_DEV_EN.tsv", [_mmbench_row(0, _b64("blue")), _mmbench_row(1, "")])
    with pytest.raises(DatasetError) as error:  # an empty field is not a reference, nor a broken image
        load_known("mmbench", tmp_path)
    assert str(error.value) == ("MMBench_DEV_EN.tsv row 2: the image field is empty; MMBench rows carry a base64 "
                                "image or another row's index")


def test_scienceqa_img_is_the_test_split_with_images(tmp_path: Path) -> None:
    root = tmp_path / "ScienceQA" / "data" / "scienceqa"
    problems = {
        "5": {"question": "Which is a mammal?", "choices": ["shark", "whale"], "answer": 1, "hint": "Look closely.",
              "image": "image.png", "split": "test"},
        "6": {"question": "No picture", "choices": ["a", "b"], "answer": 0, "hint": "", "image": None, "split": "test"},
        "7": {"question": "Train item", "choices": ["a", "b"], "answer": 0, "hint": "", "image": "image.png",
              "split": "train"},
    }
    root.mkdir(parents=True)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"test": ["5", "6"], "train": ["7"]}))  # decoy
    (root / "captions.json").write_text(json.dumps({"captions": {"5": "a whale"}}))  # decoy
    (root / "images" / "test" / "5").mkdir(parents=True)
    make_image("blue").save(root / "images" / "test" / "5" / "image.png")
    records = load_known("scienceqa_img", tmp_path / "ScienceQA")
    assert len(records) == 1 and records[0].reference == "B" and records[0].options == ("shark", "whale")
    assert records[0].prompt.startswith("Context: Look closely.\nWhich is a mammal?\nA. shark\nB. whale")
    (root / "images" / "test" / "5" / "image.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) missing .*test/5/image.png"):
        load_known("scienceqa_img", tmp_path / "ScienceQA")


def test_mmvet_release_layout(tmp_path: Path) -> None:
    root = tmp_path / "mm-vet"
    (root / "images").mkdir(parents=True)
    questions = {"v1_0": {"imagename": "v1_0.png", "question": "What colour is the square?", "answer": "blue",
                          "capability": ["rec"]},
                 "v1_1": {"imagename": "v1_1.png", "question": "What is written?", "answer": "open now",
                          "capability": ["ocr"]}}
    (root / "mm-vet.json").write_text(json.dumps(questions))
    (root / "bard_set.json").write_text(json.dumps({"v1_0": {"imagename": "x.png"}}))  # decoy beside it
    for name in ("v1_0.png", "v1_1.png"):
        make_image("blue").save(root / "images" / name)
    records = load_known("mmvet", tmp_path)
    assert [r.reference for r in records] == ["blue", "open now"] and records[0].answer_format == "open"


def test_option_letters_and_open_answers_are_scored_as_documented() -> None:
    options = ["red", "blue", "green"]
    assert extract_choice("B", options) == "B" and extract_choice("(C) green", options) == "C"
    assert extract_choice("The answer is A.", options) == "A" and extract_choice("Answer: b", options) == "B"
    assert extract_choice("It is blue.", options) == "B"  # the one option it quotes
    assert extract_choice("red or blue", options) is None  # several: no pick
    assert extract_choice("a red one", options) == "A"  # the article, then the quoted option
    assert extract_choice("D", options) is None  # not an option
    record = Record("q", "benign", reference="B", answer_format="choice", options=tuple(options))
    assert is_correct(record, "B.") and not is_correct(record, "A")
    assert token_f1("the sign says open now", "open now") == pytest.approx(2 * (2 / 5) / (2 / 5 + 1))
    assert is_correct(Record("q", "benign", reference="open now", answer_format="open"), "open now!")
    assert is_correct(Record("q", "benign", reference="red"), "Red.") and is_correct(Record("q", "benign"), "x") is None


def test_mmbench_tsv_saved_with_a_bom_keeps_a_crlf_question_and_names_a_broken_reference(tmp_path: Path) -> None:
    path = tmp_path / "MMBench_DEV_EN.tsv"
    _tsv(path, [{**_mmbench_row(0, _b64("blue")), "question": "Line one\r\nline two?"}])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # the BOM Excel writes
    [record] = load_known("mmbench", tmp_path)
    assert record.prompt.startswith("Line one\r\nline two?") and record.reference == "B"
    _tsv(path, [_mmbench_row(0, _b64("blue")), _mmbench_row(12, "7")])
    with pytest.raises(DatasetError) as error:
        load_known("mmbench", tmp_path)
    assert str(error.value) == "MMBench_DEV_EN.tsv: row 12 names image '7', which no row has"


def test_rows_files_of_other_shapes_are_refused_or_read_as_documented(tmp_path: Path, monkeypatch) -> None:
    import sys

    import pandas

    from workbench.data.catalog import _rows

    (tmp_path / "mm-vet.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(DatasetError) as error:
        list(_rows(tmp_path / "mm-vet.json"))
    assert str(error.value) == "mm-vet.json: expected a JSON object of rows keyed by id, found a list"
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(DatasetError) as error:
        list(_rows(tmp_path / "rows.txt"))
    assert str(error.value) == "rows.txt: unknown rows format"
    shard = tmp_path / "train-0.parquet"
    shard.write_bytes(b"PAR1")
    read = []
    monkeypatch.setattr(pandas, "read_parquet", lambda path: read.append(path) or pandas.DataFrame(
        {"prompt": ["a", "b"], "label": ["safe", "unsafe"]}))
    assert list(_rows(shard)) == [{"prompt": "a", "label": "safe"}, {"prompt": "b", "label": "unsafe"}]
    assert read == [shard]
    monkeypatch.setitem(sys.modules, "pandas", None)  # not installed
    with pytest.raises(DatasetError) as error:
        list(_rows(shard))
    assert str(error.value) == "train-0.parquet is parquet; `pip install pyarrow pandas` to read it"
