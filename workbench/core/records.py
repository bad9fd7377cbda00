"""Datasets of (image or none, prompt, label, source) records, read from JSONL or CSV files
(sources.py names the built-in sets and benchmarks and dispatches to these readers).

Images are referenced by path (relative to the dataset file) and opened lazily, so a dataset of
thousands of records costs little memory; every path is checked when the file is read, so a bad
line fails early with its line number.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

Label = Literal["harmful", "benign"]
LABELS: tuple[str, ...] = ("harmful", "benign")
_LABEL_ALIASES: dict[str, Label] = {"harmful": "harmful", "unsafe": "harmful", "1": "harmful", "benign": "benign",
                                    "safe": "benign", "harmless": "benign", "0": "benign"}
REQUIRED_COLUMNS = ("prompt", "label")
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs; a 6k x 6k photo still fits
# An upload (read with confine=True: a visitor's file) is held to these; the one model is shared by everyone.
MAX_UPLOAD_RECORDS = 20_000
MAX_UPLOAD_FIELD_CHARS = 4_000  # a prompt, reference or behaviour: the playground's prompt cap
# Every record decodes its image when used, so an upload's pixels count per record (one image named by 200 records
# is 200 decodes): 2,000 megapixels is 2,000 one-megapixel photos, or 50 images at the per-image limit.
MAX_UPLOAD_PIXELS = 2_000_000_000


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and line and what to fix."""


@dataclass(frozen=True)
class Record:
    """One example: an optional image (path or in-memory), a prompt, its label and where it came from."""

    prompt: str
    label: Label
    source: str = "default"
    image_path: str | None = None
    image_data: Image.Image | None = None
    reference: str | None = None  # the expected answer, where one exists (benign utility is exact match on it)
    behavior: str | None = None  # the harmful behaviour asked for, when the prompt alone does not say it (judges)
    answer_format: str = "exact"  # how `reference` is scored: exact, choice (option letter) or open (utility.py)
    options: tuple[str, ...] = ()  # a multiple-choice record's options, in letter order

    @property
    def has_image(self) -> bool:
        return self.image_path is not None or self.image_data is not None

    def load_image(self) -> Image.Image | None:
        """The image as RGB, or None for a text-only record."""
        if self.image_data is not None:
            return self.image_data.convert("RGB")
        if self.image_path is None:
            return None
        with Image.open(self.image_path) as image:
            return image.convert("RGB")

    @property
    def item(self) -> tuple[Image.Image | None, str]:
        """(image, prompt), the pair the model consumes."""
        return self.load_image(), self.prompt


def _check_image(path: Path, where: str, written: str | None = None) -> int:
    """The image's pixel count, read from its header (and verified once per file and version) without decoding it;
    missing, unreadable and oversized images get a message naming the record (and the path as the file wrote it)."""
    if not path.is_file():
        shown = repr(written) if written is not None else str(path)
        raise DatasetError(f"{where}: image file {shown} does not exist (paths are relative to the dataset file's "
                           "folder)")
    try:
        width, height = _verified_size(str(path), path.stat().st_mtime_ns, MAX_IMAGE_PIXELS)
    except Image.DecompressionBombError:
        raise DatasetError(f"{where}: image {path.name} is too large to open safely (over "
                           f"{MAX_IMAGE_PIXELS:,} pixels); resize it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{where}: image {path.name} cannot be read ({error}); replace or remove it") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(f"{where}: image {path.name} is {width}x{height}; resize it below "
                           f"{MAX_IMAGE_PIXELS:,} pixels")
    return width * height


@functools.lru_cache(maxsize=4096)
def _verified_size(path: str, version: int, limit: int) -> tuple[int, int]:
    """(width, height) from the header; an image within `limit` pixels is verified (a file named by many records
    is read once per version and limit)."""
    with Image.open(path) as image:
        width, height = image.size
        if width * height <= limit:
            image.verify()
    return width, height


class _PixelBudget:
    """An upload's pixels, counted per record as they will be decoded, held to MAX_UPLOAD_PIXELS before any is."""

    def __init__(self) -> None:
        self.pixels = 0

    def spend(self, pixels: int, where: str) -> None:
        self.pixels += pixels
        if self.pixels > MAX_UPLOAD_PIXELS:
            raise DatasetError(f"{where}: the upload's images add up to over {MAX_UPLOAD_PIXELS // 10**6:,} megapixels "
                               "(each record's image counts, also when records share one); use fewer or smaller "
                               "images (the model is shared)")


def _make_record(row: dict, base: Path, where: str, default_source: str, budget: _PixelBudget,
                 confine: bool = False) -> Record:
    if confine:
        long = [k for k, v in row.items() if len(str(v)) > MAX_UPLOAD_FIELD_CHARS]
        if long:
            raise DatasetError(f"{where}: {long[0]} is {len(str(row[long[0]])):,} characters; keep every field under "
                               f"{MAX_UPLOAD_FIELD_CHARS:,} (the model is shared)")
    missing = [c for c in REQUIRED_COLUMNS if not str(row.get(c) or "").strip()]
    if missing:
        raise DatasetError(f"{where}: missing {', '.join(missing)} (each record needs prompt and label; "
                           "image and source are optional)")
    label = _LABEL_ALIASES.get(str(row["label"]).strip().lower())
    if label is None:
        raise DatasetError(f"{where}: unknown label {row['label']!r}; use 'harmful' or 'benign'")
    image_path = None
    if row.get("image") not in (None, ""):
        path = (base / str(row["image"])).resolve()
        if confine and base.resolve() not in path.parents:
            raise DatasetError(f"{where}: image path {row['image']!r} leaves the dataset's folder; put the images "
                               "beside the file (uploads may only reference their own zip's images)")
        pixels = _check_image(path, where, str(row["image"]))
        if confine:
            budget.spend(pixels, where)
        image_path = str(path)
    reference = row.get("reference", row.get("answer"))
    behavior = row.get("behavior")
    return Record(prompt=str(row["prompt"]), label=label, source=str(row.get("source") or default_source),
                  image_path=image_path, reference=None if reference in (None, "") else str(reference),
                  behavior=None if behavior in (None, "") else str(behavior))


def read_jsonl(path: str | Path, confine: bool = False) -> list[Record]:
    """Read a JSONL file: one object per line with prompt, label and optional image, source, reference."""
    path = Path(path)
    text = _read_text(path)
    if text.lstrip().startswith("["):
        raise DatasetError(f"{path.name}: this is a JSON array; write one JSON object per line (JSONL)")
    records, budget = [], _PixelBudget()
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold a raw U+2028
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected a JSON object with prompt and label")
        records.append(_make_record(row, path.parent, where, path.stem, budget, confine))
        _check_count(records, path, confine)
    return _nonempty(records, path)


def read_csv(path: str | Path, confine: bool = False) -> list[Record]:
    """Read a CSV file with a header row: prompt, label and optional image, source columns."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))  # quoted newlines stay in their field
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(f"{path.name} line 1: header lacks column(s) {', '.join(missing)}; found "
                           f"{', '.join(columns) or 'nothing'} (a comma-separated header is expected)")
    records, budget = [], _PixelBudget()
    for row in reader:
        clean = {(k or "").strip().lower(): v or "" for k, v in row.items() if k is not None}
        clean = {k: v if k == "prompt" else v.strip() for k, v in clean.items()}  # the prompt stays byte-exact
        records.append(_make_record(clean, path.parent, f"{path.name} line {reader.line_num}", path.stem, budget,
                                    confine))
        _check_count(records, path, confine)
    return _nonempty(records, path)


def _check_count(records: list[Record], path: Path, confine: bool) -> None:
    if confine and len(records) > MAX_UPLOAD_RECORDS:
        raise DatasetError(f"{path.name} has more than {MAX_UPLOAD_RECORDS:,} records; upload a sample of it")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    try:
        return path.read_bytes().decode("utf-8-sig")  # no newline translation: a quoted "\r\n" stays in its prompt
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path.name}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def _nonempty(records: list[Record], path: Path) -> list[Record]:
    if not records:
        raise DatasetError(f"{path.name}: no records")
    return records


def open_image(image: str | Path | Image.Image | None) -> Image.Image | None:
    """An image given by a user (a file path, as the playground and `steer --image` give it, or an image) as
    RGB; folders, unreadable files and decompression bombs get a message that says what to fix."""
    if image is None or (isinstance(image, str) and not image):
        return None
    if isinstance(image, Image.Image):
        return checked_image(image)
    if Path(image).is_dir():
        raise ValueError(f"{Path(image).name} is a folder; give an image file")
    if not Path(image).is_file():
        raise FileNotFoundError(f"image file {image} does not exist")
    try:
        with Image.open(image) as opened:  # reads the header: the size is checked before any decoding
            width, height = opened.size
            loaded = opened.copy() if width * height <= MAX_IMAGE_PIXELS else None
    except Image.DecompressionBombError:
        raise ValueError(f"the image is too large to open safely; resize it below {MAX_IMAGE_PIXELS // 10**6} "
                         "megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ValueError("the image cannot be read (corrupt, empty or not an image); upload a PNG or JPEG") from None
    if loaded is None:
        raise ValueError(f"the image is {width}x{height}; resize it below {MAX_IMAGE_PIXELS:,} pixels")
    return checked_image(loaded)


def checked_image(image: Image.Image | None) -> Image.Image | None:
    """The image as RGB, refused (with its size) above MAX_IMAGE_PIXELS."""
    if image is None:
        return None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ValueError(f"the image is {image.width}x{image.height}; resize it below {MAX_IMAGE_PIXELS:,} pixels")
    return image.convert("RGB")


def require_both_labels(records: Iterable[Record]) -> None:
    """Directions need both classes; say which is missing."""
    labels = {r.label for r in records}
    for label in LABELS:
        if label not in labels:
            raise DatasetError(f"the dataset has no {label} records; directions need harmful and benign examples")


class MissingImage(Exception):
    """A benchmark row whose image is not at its exact path (collected by the loader, then reported once)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


def record_key(record: Record) -> str:
    """A content key of what the model sees (prompt and image bytes; not label or source): equal keys are the
    same input, so they form one cluster in the statistics and count as overlap in the leakage guard."""
    digest = hashlib.sha256(record.prompt.encode())
    if record.image_path:
        digest.update(Path(record.image_path).read_bytes())
    elif record.image_data is not None:
        digest.update(record.image_data.convert("RGB").tobytes())
    return digest.hexdigest()[:16]


def dataset_hash(records: Iterable[Record]) -> str:
    """A short content hash of the records (prompt, label, source, image bytes) for provenance."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.prompt, record.label, record.source]).encode())
        if record.image_path:
            digest.update(Path(record.image_path).read_bytes())
        elif record.image_data is not None:
            digest.update(record.image_data.tobytes())
    return digest.hexdigest()[:16]
