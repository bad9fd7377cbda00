"""The safety benchmarks researchers use, mapped to (image, prompt, label, source) records.

`load_known("advbench")` downloads the set from the Hugging Face hub (online users);
`load_known("advbench", "/path/to/copy")` reads a local copy (a folder or the set's own file) in
the layout its authors publish. Offline without a local copy, the error says where to get one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .data import DatasetError, Record
from .typographic import FIGSTEP_PROMPT, render_instruction

Row = dict[str, object]
BLANK_SIZE = 336


@dataclass(frozen=True)
class KnownSet:
    """A published set: where to get it, which files hold its rows, how a row becomes a record."""

    name: str
    hub_id: str | None
    homepage: str
    patterns: tuple[str, ...]
    to_record: Callable[[Row, Path], Record | None]
    about: str


def _blank() -> Image.Image:
    return Image.new("RGB", (BLANK_SIZE, BLANK_SIZE), "white")


def _text(row: Row, *keys: str) -> str:
    for key in keys:
        value = row.get(key)
        if isinstance(value, dict):
            value = value.get("text")
        if value not in (None, "") and str(value).strip():
            return str(value).strip()
    raise DatasetError(f"row lacks a {' or '.join(keys)} column (found: {', '.join(map(str, row)) or 'nothing'})")


def _find_image(base: Path, relative: str) -> Path | None:
    """The image at base/relative, else the first file with that name anywhere below base."""
    direct = base / relative
    if direct.is_file():
        return direct
    return next(base.rglob(Path(relative).name), None)


def _advbench(row: Row, base: Path) -> Record:
    return Record(_text(row, "goal", "prompt"), "harmful", "advbench", image_data=_blank())


def _figstep(row: Row, base: Path) -> Record:
    instruction = _text(row, "instruction", "question")
    name = f"query_{row.get('dataset')}_{row.get('category_id')}_{row.get('task_id')}_6.png"
    image = _find_image(base, f"images/SafeBench/{name}")
    if image is not None:
        return Record(FIGSTEP_PROMPT, "harmful", "figstep", image_path=str(image))
    return Record(FIGSTEP_PROMPT, "harmful", "figstep", image_data=render_instruction(instruction))


def _mmsafetybench(row: Row, base: Path) -> Record | None:
    image = _find_image(base, f"imgs/{row['_file']}/SD_TYPO/{row['_id']}.jpg")
    if image is None:
        return None
    return Record(_text(row, "Rephrased Question", "Question"), "harmful", f"mmsafetybench/{row['_file']}",
                  image_path=str(image))


def _jailbreakv(row: Row, base: Path) -> Record | None:
    image = _find_image(base, str(row.get("image_path", "")))
    if image is None:
        return None
    return Record(_text(row, "jailbreak_query"), "harmful", f"jailbreakv/{row.get('format', 'unknown')}",
                  image_path=str(image))


def _realtoxicity(row: Row, base: Path) -> Record:
    prompt = row.get("prompt")
    toxicity = (prompt.get("toxicity") if isinstance(prompt, dict) else row.get("toxicity")) or 0.0
    harmful = float(str(toxicity)) >= 0.5  # Perspective toxicity of the prompt itself
    return Record(_text(row, "prompt"), "harmful" if harmful else "benign", "realtoxicityprompts")


def _xstest(row: Row, base: Path) -> Record:
    label = str(row.get("label", "")).strip().lower()
    if label not in ("safe", "unsafe"):
        label = "unsafe" if str(row.get("type", "")).startswith("contrast") else "safe"
    return Record(_text(row, "prompt"), "benign" if label == "safe" else "harmful", "xstest")


CATALOG: dict[str, KnownSet] = {s.name: s for s in (
    KnownSet("advbench", "walledai/AdvBench", "https://github.com/llm-attacks/llm-attacks",
             ("harmful_behaviors.csv", "*.csv", "*.parquet"), _advbench,
             "520 harmful text goals (goal,target), each paired with a blank white image"),
    KnownSet("figstep", None, "https://github.com/ThuCCSLab/FigStep", ("safebench.csv", "*.csv"), _figstep,
             "SafeBench typographic images with FigStep's neutral prompt (rendered here when an image is missing)"),
    KnownSet("mmsafetybench", None, "https://github.com/isXinLiu/MM-SafetyBench", ("processed_questions/*.json",),
             _mmsafetybench, "SD+TYPO images with their rephrased questions, one source per scenario"),
    KnownSet("jailbreakv", "JailbreakV-28K/JailBreakV-28k", "https://github.com/EddyLuo1232/JailBreakV_28K",
             ("JailBreakV_28K.csv", "mini_JailBreakV_28K.csv", "*.csv"), _jailbreakv,
             "jailbreak queries with their images, one source per attack format"),
    KnownSet("realtoxicityprompts", "allenai/real-toxicity-prompts", "https://allenai.org/data/real-toxicity-prompts",
             ("prompts.jsonl", "*.jsonl"), _realtoxicity,
             "sentence starts; harmful when the prompt's own toxicity >= 0.5, text only"),
    KnownSet("xstest", "walledai/XSTest", "https://github.com/paul-rottger/exaggerated-safety",
             ("xstest_prompts.csv", "xstest*.csv", "*.csv", "*.parquet"), _xstest,
             "safe-but-sensitive prompts (benign) and their unsafe contrasts, for over-refusal"),
)}


def _rows(path: Path) -> Iterator[Row]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines())
    elif suffix == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)
    elif suffix == ".json":  # MM-SafetyBench: {id: row} per scenario file
        content = json.loads(path.read_text(encoding="utf-8"))
        items = content.items() if isinstance(content, dict) else enumerate(content)
        for key, row in items:
            yield {**row, "_id": key, "_file": path.stem}
    elif suffix == ".parquet":
        try:
            import pandas
            yield from pandas.read_parquet(path).to_dict("records")
        except ImportError:
            raise DatasetError(f"{path.name} is parquet; `pip install pyarrow` to read it") from None


def _files(known: KnownSet, root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    for pattern in known.patterns:
        found = sorted(p for p in root.rglob(pattern) if p.is_file())
        if found:
            return found[:1] if "*" not in pattern else found
    raise DatasetError(f"{root}: no {known.name} file found (looked for {', '.join(known.patterns)}); "
                       f"point at the folder of the copy from {known.homepage}")


def load_known(name: str, local: str | Path | None = None, limit: int | None = None) -> list[Record]:
    """Records of the published set `name`, from a local copy or (online) the Hugging Face hub."""
    known = CATALOG.get(name.lower())
    if known is None:
        raise DatasetError(f"unknown benchmark {name!r}; known: {', '.join(CATALOG)}")
    root = Path(local) if local else _download(known)
    if not root.exists():
        raise DatasetError(f"{root} does not exist; give the folder (or file) of your {name} copy")
    records: list[Record] = []
    skipped = 0
    for path in _files(known, root):
        base = root if root.is_dir() else root.parent
        for number, row in enumerate(_rows(path), start=1):
            try:
                record = known.to_record(row, base)
            except DatasetError as error:
                raise DatasetError(f"{path.name} row {number}: {error}") from None
            if record is None:
                skipped += 1
                continue
            records.append(record)
            if limit and len(records) >= limit:
                return records
    if not records:
        raise DatasetError(f"{root}: no usable {name} records ({skipped} rows without their image)")
    return records


def _download(known: KnownSet) -> Path:
    where = f"download it from {known.homepage} and load it as {known.name}:/path/to/copy"
    if known.hub_id is None:
        raise DatasetError(f"{known.name} is not on the Hugging Face hub in a layout this loader knows; {where}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(known.hub_id, repo_type="dataset"))
    except Exception as error:  # noqa: BLE001 - offline, gated, renamed: all mean "get a local copy"
        raise DatasetError(f"{known.name} needs a download from the hub ({known.hub_id}), which failed "
                           f"({type(error).__name__}); when offline, {where}") from None
