"""Dataset sources by name: `load_dataset(spec)` reads a .jsonl/.csv file or asks a registered source.

A source is a prefix (`demo`, `organism`, `advbench`, ...) and a loader that receives what follows
`prefix:` (None when nothing does): `organism:test`, `advbench:/path/to/copy`. Adding one is one
function and one `register_source` call; the CLI, the app's dataset pickers and notebooks then know it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..core.records import DatasetError, Record, read_csv, read_jsonl
from ..organism import SPLITS, demo
from ..organism import dataset as organism_dataset
from .catalog import CATALOG, load_known

Loader = Callable[[str | None], list[Record]]


@dataclass(frozen=True)
class DataSource:
    """A named source: its loader, a one-line description, what pickers list, and the one model it fits (if any)."""

    prefix: str
    load: Loader
    about: str
    choices: tuple[str, ...]
    only_for_model: str | None = None


SOURCES: dict[str, DataSource] = {}


def register_source(prefix: str, load: Loader, about: str, choices: tuple[str, ...] | None = None,
                    only_for_model: str | None = None) -> DataSource:
    """Make `prefix` and `prefix:ARG` loadable everywhere a dataset is named."""
    key = prefix.lower()
    if not key.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a source prefix is a word such as 'advbench', got {prefix!r}")
    if key in SOURCES:
        raise ValueError(f"dataset source {prefix!r} is already registered")
    SOURCES[key] = DataSource(key, load, about, choices or (key,), only_for_model)
    return SOURCES[key]


def source_of(spec: str) -> DataSource | None:
    """The registered source a dataset spec names, or None for a file path."""
    return SOURCES.get(str(spec).partition(":")[0].lower())


def load_dataset(spec: str | Path, confine: bool = False) -> list[Record]:
    """Records from a .jsonl/.csv path or a registered source (`organism:train`, `advbench[:path]`).
    `confine=True` (uploads) refuses image paths outside the dataset file's folder."""
    spec = str(spec)
    source = source_of(spec)
    if source is not None:
        _, separator, argument = spec.partition(":")
        return source.load(argument if separator else None)
    suffix = Path(spec).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(spec, confine)
    if suffix == ".csv":
        return read_csv(spec, confine)
    raise DatasetError(f"{spec}: unknown dataset format; give a .jsonl or .csv file or a registered source "
                       f"({', '.join(SOURCES)}), optionally followed by :ARGUMENT such as organism:test or "
                       "advbench:/path/to/local/copy")


def dataset_choices(model_spec: str) -> list[str]:
    """What dataset pickers list for `model_spec`: every source's choices that fit the model."""
    return [choice for source in SOURCES.values() if source.only_for_model in (None, model_spec)
            for choice in source.choices]


def default_dataset(model_spec: str, split: str = "train") -> str:
    """The dataset a new session starts with: the organism's own `split` for the organism, else the demo set."""
    return f"organism:{split}" if model_spec == "organism" else "demo"


def _demo(argument: str | None) -> list[Record]:
    if argument:
        raise DatasetError(f"demo takes no argument (got demo:{argument})")
    return demo()


def _organism(argument: str | None) -> list[Record]:
    if argument not in SPLITS:
        raise DatasetError(f"the organism's sets are {', '.join(f'organism:{s}' for s in SPLITS)} "
                           f"(got {argument!r})")
    return organism_dataset(argument)


register_source("organism", _organism, "the model organism's records: typographic, text, role-play and scene VQA",
                tuple(f"organism:{s}" for s in SPLITS), only_for_model="organism")
register_source("demo", _demo, "four harmful and four benign activities, in text and as typographic images")
for _known in sorted(CATALOG.values(), key=lambda k: k.name):
    register_source(_known.name, partial(load_known, _known.name), _known.about)
