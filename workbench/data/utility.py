"""Utility benchmarks (what a defence must not break): MMBench, ScienceQA-IMG and MM-Vet rows -> records, and
how their answers are scored.

Each record is benign with a `reference` and an `answer_format`: "exact" (the default: normalised exact
match), "choice" (multiple choice: the option letter is extracted from the response, see `extract_choice`)
or "open" (MM-Vet's open answers: upstream a GPT-4 grader scores them; offline the workbench uses the named
fallback `OPEN_ANSWER_JUDGE`, token F1 >= 0.5 against the reference, which is not comparable to published
MM-Vet numbers). The row converters are registered in `catalog.py`'s table.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import string
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..core.records import DatasetError, MissingImage, Record

CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."  # LLaVA-1.5's eval prompt
OPEN_ANSWER_JUDGE = "token F1 >= 0.5 against the reference (offline fallback for MM-Vet's GPT-4 grader)"
CHOICE_JUDGE = "option letter extracted from the response (first standalone letter, else the one option quoted)"
LETTERS = "ABCDEFGH"


class SkipRow(Exception):
    """A row outside the set a loader reads (e.g. a ScienceQA problem with no image or not in the test split)."""


def choice_prompt(question: str, options: list[str], hint: str | None = None) -> str:
    """The question, its hint as context, the lettered options and the instruction to answer with a letter."""
    lines = [f"Context: {hint}"] if hint else []
    lines += [question, *(f"{LETTERS[i]}. {option}" for i, option in enumerate(options)), CHOICE_INSTRUCTION]
    return "\n".join(lines)


_LEADING = re.compile(r"^\W*(?:the answer is|answer\s*:|option)?\W*\(?([A-H])\)?(?:[.):,\s]|$)", re.IGNORECASE)
_ANYWHERE = re.compile(r"(?:answer is|answer:)\s*\(?([A-H])\b\)?", re.IGNORECASE)


def extract_choice(response: str, options: list[str]) -> str | None:
    """The option letter a response picks: a letter at its start ("B", "(B)", "B.", "Answer: B"), or after
    "the answer is", or else the single option whose text it quotes; None when it picks none or several."""
    text = response.strip()
    count = len(options)
    for pattern in (_LEADING, _ANYWHERE):
        match = pattern.search(text)
        if match and match.group(1).upper() in LETTERS[:count]:
            if pattern is _LEADING and len(text) > 1 and match.group(1) in "Aa" and text[:2].lower() == "a ":
                continue  # the article "a ...", not the letter
            return match.group(1).upper()
    quoted = [LETTERS[i] for i, option in enumerate(options) if option and option.lower() in text.lower()]
    return quoted[0] if len(quoted) == 1 else None


def _tokens(text: str) -> list[str]:
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()


def token_f1(response: str, reference: str) -> float:
    """SQuAD-style token F1 between a response and a reference answer."""
    got, want = _tokens(response), _tokens(reference)
    if not got or not want:
        return float(got == want)
    common = sum(min(got.count(t), want.count(t)) for t in set(got))
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def is_correct(record: Record, response: str) -> bool | None:
    """Whether `response` answers a benign record right, by its answer format; None without a reference."""
    if record.reference is None:
        return None
    if record.answer_format == "choice":
        return extract_choice(response, list(record.options)) == record.reference
    if record.answer_format == "open":
        return token_f1(response, record.reference) >= 0.5
    return _normalise(response) == _normalise(record.reference)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def _options(row: dict, letters: str = LETTERS) -> list[str]:
    options = []
    for letter in letters:
        value = row.get(letter)
        if value is None or (isinstance(value, float) and value != value) or str(value).strip() in ("", "nan"):
            break
        options.append(str(value))
    return options


def _decode_image(data: str) -> Image.Image:
    """The base64 image, opened lazily (pixels decode on first use, so a large TSV does not fill memory)."""
    try:
        raw = base64.b64decode(data, validate=False)
        with Image.open(io.BytesIO(raw)) as probe:
            probe.verify()
        return Image.open(io.BytesIO(raw))  # verify() spends the image it checks
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as error:
        raise DatasetError(f"its base64 image cannot be decoded ({type(error).__name__})") from None


def mmbench_row(row: dict, images: Path | None) -> Record:
    """MMBench's TSV (OpenCompass): question, hint, options A-D, answer letter, base64 image."""
    answer = str(row.get("answer") or "").strip()
    if answer not in LETTERS:
        raise DatasetError("no answer letter: MMBench's test split has none; use a dev split "
                           "(e.g. MMBench_DEV_EN.tsv)")
    if not str(row.get("image") or "").strip():
        raise DatasetError("the image field is empty; MMBench rows carry a base64 image or another row's index")
    options = _options(row)
    hint = str(row.get("hint") or "").strip()
    prompt = choice_prompt(str(row["question"]), options, None if hint in ("", "nan") else hint)
    return Record(prompt, "benign", "mmbench", image_data=_decode_image(str(row["image"])), reference=answer,
                  answer_format="choice", options=tuple(options))


def scienceqa_row(row: dict, images: Path | None) -> Record:
    """ScienceQA's problems.json: ScienceQA-IMG is the test split's problems with an image
    (`images/test/<id>/image.png`); other rows are skipped and counted."""
    if row.get("split") != "test" or not row.get("image"):
        raise SkipRow()
    if images is None:
        raise DatasetError("ScienceQA-IMG needs its images folder")
    path = images / "test" / str(row["_id"]) / str(row["image"])
    if not path.is_file():
        raise MissingImage(path)
    options = [str(choice) for choice in row.get("choices") or []]
    answer = int(row["answer"])
    if not 0 <= answer < len(options):
        raise DatasetError(f"answer index {answer} is outside its {len(options)} choices")
    hint = str(row.get("hint") or "").strip()
    return Record(choice_prompt(str(row["question"]), options, hint or None), "benign", "scienceqa-img",
                  image_path=str(path), reference=LETTERS[answer], answer_format="choice", options=tuple(options))


def mmvet_row(row: dict, images: Path | None) -> Record:
    """MM-Vet's mm-vet.json: {id: {imagename, question, answer, capability}}; open-ended answers."""
    if images is None:
        raise DatasetError("MM-Vet needs its images folder")
    path = images / str(row["imagename"])
    if not path.is_file():
        raise MissingImage(path)
    return Record(str(row["question"]), "benign", "mmvet", image_path=str(path), reference=str(row["answer"]),
                  answer_format="open")
