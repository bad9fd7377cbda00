"""The CLI's start-up imports with the cyclic garbage collector paused (standard library only: it runs first).

Importing torch, transformers (with torchvision and torch._dynamo behind its image processors), open_clip and
Detoxify creates a few million objects that live until exit. With the collector on, every full collection scans
all of them again as the heap grows: measured 4.2 s vs 3.4 s for those imports on a 2-core machine.
`python -m workbench` (and app.py) imports what its command will need inside `collector_paused()`, which then
freezes what the imports built (`gc.freeze`: later collections skip it) and turns the collector back on. Only
imports run paused: model weights, datasets and scorer checkpoints load afterwards with the collector on, so no
garbage holding tensors is ever frozen, and every long job runs with the collector as usual.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

# The commands that load a model, and the modules they import on the way (a hint for speed: a module missing here
# is imported by the command itself, with the collector on; one missing from the installation is skipped).
MODEL_COMMANDS = ("stage1", "steer", "stage2", "eval", "compare")
MODEL_LIBRARIES = ("transformers.processing_utils", "transformers.image_processing_utils",
                   "transformers.modeling_utils")
SCORER_LIBRARIES = ("torch", "open_clip", "detoxify")  # the toxicity scorer and open_clip (rewards.load_scorers)
SCORING_COMMANDS = ("stage2", "eval", "compare")  # the commands that load those scorers


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run a block of imports without the cyclic collector, then freeze what it built and resume collecting."""
    if not gc.isenabled():  # nested, or turned off by the caller: leave it as it is
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def preimport(modules: Iterable[str]) -> None:
    """Import `modules` now; one that fails is skipped: the code that needs it imports it again in its own place,
    which reports the error or handles it (a missing Detoxify is a named fallback, not a crash here)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a speed hint must not change what the command does
            continue


def command_to_run(argv: Sequence[str]) -> str | None:
    """The CLI command `argv` will run, read before argparse (None for no command or a request for help)."""
    return None if not argv or {"-h", "--help"} & set(argv) else argv[0]


def libraries_for(argv: Sequence[str], scorers_here: bool) -> tuple[str, ...]:
    """What the command in `argv` will import: the CLI, the model libraries for a command that loads a model, and
    the scorers' when it loads them in this process (stage2; eval/compare without a scorer process)."""
    command = command_to_run(argv)
    if command not in MODEL_COMMANDS:
        return ("workbench.cli",)
    scorers = SCORER_LIBRARIES if scorers_here and command in SCORING_COMMANDS else ()
    return ("workbench.cli", *MODEL_LIBRARIES, *scorers)
