"""The safety benchmarks researchers use, mapped to (image, prompt, label, source) records — right or loud.

`load_known("advbench")` downloads the set from the Hugging Face hub (online users);
`load_known("advbench", "/path/to/copy")` reads a local copy: the authors' repository as cloned (or its
`data/` folder), a hub snapshot, or the rows file itself. Each set lists the exact files of each
published layout (`Layout`): no name search, no broad glob, so a Tiny copy, evaluation CSVs, filtered
files or model completions beside the prompts are never read. Images are paired by their exact path;
a missing image, a git-LFS pointer in place of the data, or two versions in one folder stop the load
with a message that says what was expected.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..attacks.typographic import FIGSTEP_PROMPT
from ..core.records import DatasetError, MissingImage, Record
from .utility import SkipRow, mmbench_row, mmvet_row, scienceqa_row

Row = dict[str, object]
BLANK_SIZE = 336
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
SHOWN_MISSING = 3  # expected image paths named in a "missing images" error


@dataclass(frozen=True)
class Layout:
    """One published layout: the rows file(s) relative to the folder given (a pattern matches every shard of
    one version, e.g. per-scenario JSON files), and the folder image paths are relative to (None: no images)."""

    rows: str
    images: str | None = None


@dataclass(frozen=True)
class KnownSet:
    """A published set: where to get it, its layouts, how a row becomes a record, its licence and citation."""

    name: str
    hub_id: str | None
    homepage: str
    layouts: tuple[Layout, ...]
    to_record: Callable[[Row, Path | None], Record]
    about: str
    licence: str
    citation: str


def _blank() -> Image.Image:
    return Image.new("RGB", (BLANK_SIZE, BLANK_SIZE), "white")


def _text(row: Row, *keys: str) -> str:
    """The first non-empty field among `keys`, byte-exact (never stripped)."""
    for key in keys:
        value = row.get(key)
        if isinstance(value, dict):
            value = value.get("text")
        if value not in (None, "") and str(value).strip():
            return str(value)
    raise DatasetError(f"row lacks a {' or '.join(keys)} column (found: {', '.join(map(str, row)) or 'nothing'})")


def _image(images: Path | None, relative: str) -> Path:
    """The image at exactly images/relative (no search anywhere else)."""
    if images is None or not relative:
        raise DatasetError("row has no image path")
    path = images / relative
    if not path.is_file():
        raise MissingImage(path)
    return path


def _advbench(row: Row, images: Path | None) -> Record:
    return Record(_text(row, "goal", "prompt"), "harmful", "advbench", image_data=_blank())


def _figstep(row: Row, images: Path | None) -> Record:
    instruction = _text(row, "instruction")  # the rendered instruction: present, or the file is not SafeBench
    name = f"query_{row.get('dataset')}_{row.get('category_id')}_{row.get('task_id')}_6.png"
    return Record(FIGSTEP_PROMPT, "harmful", "figstep", image_path=str(_image(images, name)), behavior=instruction)


def _mmsafetybench(row: Row, images: Path | None) -> Record:
    image = _image(images, f"{row['_file']}/SD_TYPO/{row['_id']}.jpg")
    return Record(_text(row, "Rephrased Question"), "harmful", f"mmsafetybench/{row['_file']}",
                  image_path=str(image), behavior=str(row.get("Question") or "") or None)


def _jailbreakv(row: Row, images: Path | None) -> Record:
    image = _image(images, str(row.get("image_path") or ""))
    return Record(_text(row, "jailbreak_query"), "harmful", f"jailbreakv/{row.get('format') or 'unknown'}",
                  image_path=str(image), behavior=str(row.get("redteam_query") or "") or None)


def _redteam2k(row: Row, images: Path | None) -> Record:
    return Record(_text(row, "question"), "harmful", f"redteam2k/{row.get('policy') or 'unknown'}")


class _Unscored(Exception):
    """A RealToxicityPrompts row without a toxicity score (left out and counted, never guessed)."""


def _realtoxicity(row: Row, images: Path | None) -> Record:
    prompt = row.get("prompt")
    toxicity = prompt.get("toxicity") if isinstance(prompt, dict) else row.get("toxicity")
    if toxicity is None or toxicity == "":
        raise _Unscored()
    harmful = float(str(toxicity)) >= 0.5  # Perspective toxicity of the prompt itself
    return Record(_text(row, "prompt"), "harmful" if harmful else "benign", "realtoxicityprompts")


def _xstest(row: Row, images: Path | None) -> Record:
    label = str(row.get("label") or "").strip().lower()
    if label not in ("safe", "unsafe"):  # v2 before labels were added: contrast prompts are the unsafe ones
        label = "unsafe" if str(row.get("type", "")).startswith("contrast") else "safe"
    return Record(_text(row, "prompt"), "benign" if label == "safe" else "harmful", "xstest")


_HUB_SHARDS = Layout("data/train-*.parquet")
_JAILBREAKV_CITE = "Luo et al. 2024, JailBreakV-28K (arXiv:2404.03027)"  # licence: MIT (Hugging Face card)
CATALOG: dict[str, KnownSet] = {s.name: s for s in (
    KnownSet("advbench", "walledai/AdvBench", "https://github.com/llm-attacks/llm-attacks",
             (Layout("harmful_behaviors.csv"), Layout("data/advbench/harmful_behaviors.csv"), _HUB_SHARDS),
             _advbench, "520 harmful text goals (goal,target), each paired with a blank white image",
             "MIT (llm-attacks repository)", "Zou et al. 2023, Universal and Transferable Adversarial Attacks "
             "(arXiv:2307.15043)"),
    KnownSet("figstep", None, "https://github.com/ThuCCSLab/FigStep",
             (Layout("data/question/safebench.csv", "data/images/SafeBench"),
              Layout("question/safebench.csv", "images/SafeBench")),
             _figstep, "SafeBench: 500 typographic images with FigStep's neutral prompt",
             "MIT", "Gong et al. 2023, FigStep (arXiv:2311.05608)"),
    KnownSet("figstep_tiny", None, "https://github.com/ThuCCSLab/FigStep",
             (Layout("data/question/SafeBench-Tiny.csv", "data/images/SafeBench-Tiny"),
              Layout("question/SafeBench-Tiny.csv", "images/SafeBench-Tiny")),
             _figstep, "SafeBench-Tiny: FigStep's 50-image subset", "MIT",
             "Gong et al. 2023, FigStep (arXiv:2311.05608)"),
    KnownSet("mmsafetybench", None, "https://github.com/isXinLiu/MM-SafetyBench",
             (Layout("data/processed_questions/*.json", "data/imgs"), Layout("processed_questions/*.json", "imgs")),
             _mmsafetybench, "SD+TYPO images with their rephrased questions, one source per scenario",
             "not checked here: see the repository before use", "Liu et al. 2024, MM-SafetyBench (arXiv:2311.17600)"),
    KnownSet("jailbreakv", "JailbreakV-28K/JailBreakV-28k", "https://github.com/EddyLuo1232/JailBreakV_28K",
             (Layout("JailBreakV_28K.csv", "."), Layout("JailBreakV_28K/JailBreakV_28K.csv", "JailBreakV_28K")),
             _jailbreakv, "28,000 jailbreak queries with their images, one source per attack format",
             "MIT", _JAILBREAKV_CITE),
    KnownSet("jailbreakv_mini", "JailbreakV-28K/JailBreakV-28k", "https://github.com/EddyLuo1232/JailBreakV_28K",
             (Layout("mini_JailBreakV_28K.csv", "."),
              Layout("JailBreakV_28K/mini_JailBreakV_28K.csv", "JailBreakV_28K")),
             _jailbreakv, "JailBreakV's 280-query mini set", "MIT", _JAILBREAKV_CITE),
    KnownSet("redteam2k", "JailbreakV-28K/JailBreakV-28k", "https://github.com/EddyLuo1232/JailBreakV_28K",
             (Layout("RedTeam_2K.csv"), Layout("JailBreakV_28K/RedTeam_2K.csv")),
             _redteam2k, "JailBreakV's RedTeam-2K harmful queries, text only, one source per policy",
             "MIT", _JAILBREAKV_CITE),
    KnownSet("realtoxicityprompts", "allenai/real-toxicity-prompts", "https://allenai.org/data/real-toxicity-prompts",
             (Layout("prompts.jsonl"), Layout("realtoxicityprompts-data/prompts.jsonl")), _realtoxicity,
             "sentence starts; harmful when the prompt's own toxicity >= 0.5 (unscored prompts left out), text only",
             "Apache-2.0 (Hugging Face card)", "Gehman et al. 2020, RealToxicityPrompts (Findings of EMNLP 2020)"),
    KnownSet("xstest", "walledai/XSTest", "https://github.com/paul-rottger/exaggerated-safety",
             (Layout("xstest_prompts.csv"), Layout("xstest_v2_prompts.csv"), _HUB_SHARDS), _xstest,
             "250 safe-but-sensitive prompts (benign) and 200 unsafe contrasts, for over-refusal",
             "CC BY 4.0 (prompts; completions keep their models' licences)",
             "Röttger et al. 2024, XSTest (NAACL 2024)"),
    # Utility sets (benign, with references): what a defence must not break.
    KnownSet("mmbench", None, "https://github.com/open-compass/MMBench",
             (Layout("MMBench_DEV_EN.tsv"), Layout("MMBench_DEV_EN_V11.tsv")), mmbench_row,
             "MMBench dev (English): multiple choice, base64 images in the TSV; accuracy by option letter",
             "Apache-2.0 (OpenCompass)", "Liu et al. 2024, MMBench (arXiv:2307.06281)"),
    KnownSet("scienceqa_img", None, "https://github.com/lupantech/ScienceQA",
             (Layout("data/scienceqa/problems.json", "data/scienceqa/images"),
              Layout("scienceqa/problems.json", "scienceqa/images"), Layout("problems.json", "images")),
             scienceqa_row, "ScienceQA-IMG: the test split's 2,017 problems with an image; multiple choice",
             "CC BY-NC-SA 4.0", "Lu et al. 2022, ScienceQA (NeurIPS 2022)"),
    KnownSet("mmvet", None, "https://github.com/yuweihao/MM-Vet",
             (Layout("mm-vet/mm-vet.json", "mm-vet/images"), Layout("mm-vet.json", "images")), mmvet_row,
             "MM-Vet: 218 open-ended questions; offline scored by token F1 (upstream: a GPT-4 grader)",
             "Apache-2.0 (code); see the repository for the images", "Yu et al. 2024, MM-Vet (ICML 2024)"),
)}


def _check_not_lfs(path: Path) -> None:
    with open(path, "rb") as handle:
        if handle.read(len(LFS_POINTER)) == LFS_POINTER:
            raise DatasetError(f"{path.name} is a git-LFS pointer, not the data: run `git lfs pull` in that "
                               "repository (or download the file itself) and load it again")


def _rows(path: Path) -> Iterator[Row]:
    _check_not_lfs(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as handle:  # newline="": quoted newlines kept
            yield from csv.DictReader(handle)
    elif suffix == ".tsv":  # MMBench: base64 images inline; a short numeric image field names another row's image
        csv.field_size_limit(2 ** 31 - 1)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        inline = {str(row.get("index")): row.get("image") for row in rows if len(str(row.get("image") or "")) > 64}
        for row in rows:
            image = str(row.get("image") or "")
            if len(image) <= 64 and image:
                if image not in inline:
                    raise DatasetError(f"{path.name}: row {row.get('index')} names image {image!r}, which no row has")
                row = {**row, "image": inline[image]}
            yield row
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
    elif suffix == ".json":  # MM-SafetyBench, ScienceQA, MM-Vet: {id: row}; the id names the row's image
        content = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(content, dict):  # a list has no ids: pairing images by position would be a guess
            raise DatasetError(f"{path.name}: expected a JSON object of rows keyed by id, found a "
                               f"{type(content).__name__}")
        for key, row in content.items():
            yield {**row, "_id": key, "_file": path.stem}
    elif suffix == ".parquet":
        try:
            import pandas
        except ImportError:
            raise DatasetError(f"{path.name} is parquet; `pip install pyarrow pandas` to read it") from None
        yield from pandas.read_parquet(path).to_dict("records")
    else:
        raise DatasetError(f"{path.name}: unknown rows format")


def resolve(known: KnownSet, given: Path) -> tuple[list[Path], Path | None]:
    """(rows files, images folder) of the one layout `given` holds; loud when none or several match."""
    if given.is_file():  # the deepest layout that ends in this file says where the repository root is
        for layout in sorted(known.layouts, key=lambda candidate: -len(Path(candidate.rows).parts)):
            tail = Path(layout.rows)
            if given.match(str(tail)):
                root = given.parents[len(tail.parts) - 1]
                return [given], (root / layout.images).resolve() if layout.images else None
        raise DatasetError(f"{given.name} is not a {known.name} rows file (expected "
                           f"{', '.join(Path(layout.rows).name for layout in known.layouts)})")
    found = [(layout, sorted(p for p in given.glob(layout.rows) if p.is_file())) for layout in known.layouts]
    found = [(layout, files) for layout, files in found if files]
    if not found:
        raise DatasetError(f"{given}: no {known.name} rows found (looked for "
                           f"{', '.join(layout.rows for layout in known.layouts)}); point at the repository "
                           f"as cloned from {known.homepage}, its data/ folder, or the rows file itself")
    if len(found) > 1:
        raise DatasetError(f"{given}: more than one {known.name} version here ("
                           f"{', '.join(str(files[0].relative_to(given)) for _, files in found)}); point at the "
                           "file you mean")
    layout, files = found[0]
    return files, (given / layout.images).resolve() if layout.images else None


def load_known(name: str, local: str | Path | None = None, limit: int | None = None) -> list[Record]:
    """Records of the published set `name`, from a local copy or (online) the Hugging Face hub."""
    known = CATALOG.get(name.lower())
    if known is None:
        raise DatasetError(f"unknown benchmark {name!r}; known: {', '.join(CATALOG)}")
    root = Path(local) if local else _download(known)
    if not root.exists():
        raise DatasetError(f"{root} does not exist; give the folder (or file) of your {name} copy")
    files, images = resolve(known, root)
    records: list[Record] = []
    missing: list[Path] = []
    unscored = 0
    for path in files:
        for number, row in enumerate(_rows(path), start=1):
            try:
                records.append(known.to_record(row, images))
            except DatasetError as error:
                raise DatasetError(f"{path.name} row {number}: {error}") from None
            except MissingImage as absent:
                missing.append(absent.path)
            except _Unscored:
                unscored += 1
            except SkipRow:
                continue
            if limit and len(records) >= limit:
                break
        if limit and len(records) >= limit:
            break  # the other shards are not read either
    if missing:
        shown = ", ".join(str(p.relative_to(images)) if images else str(p) for p in missing[:SHOWN_MISSING])
        raise DatasetError(f"{name}: {len(missing)} image(s) missing from {images.name if images else 'the copy'} "
                           f"(expected {shown}{', ...' if len(missing) > SHOWN_MISSING else ''}); download the "
                           f"images from {known.homepage} into that folder")
    if unscored:
        warnings.warn(f"{name}: {unscored} prompt(s) without a toxicity score were left out", stacklevel=2)
    if not records:
        raise DatasetError(f"{root}: no usable {name} records")
    return records[:limit] if limit else records


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
