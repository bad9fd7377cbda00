"""Progress reporting and cancellation shared by every long job (tqdm in the CLI, gr.Progress in the UI)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
ProgressFn = Callable[[int, int, str], None]  # (done, total, description)


class Cancelled(RuntimeError):
    """Raised inside a long job when its cancel event is set; work finished so far is kept by the caller."""


def track(items: Iterable[T], total: int, description: str, progress: ProgressFn | None = None,
          cancel: threading.Event | None = None, show_bar: bool = True) -> Iterator[T]:
    """Iterate with a tqdm bar, an optional progress callback and a cancel check before each item."""
    bar = tqdm(total=total, desc=description, disable=not show_bar, leave=False)
    try:
        for done, item in enumerate(items):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{description}: cancelled after {done} of {total}")
            if progress is not None:
                progress(done, total, description)
            yield item
            bar.update(1)
        if progress is not None:
            progress(total, total, description)
    finally:
        bar.close()
