"""Progress reporting and cancellation shared by every long job (tqdm in the CLI, gr.Progress in the UI)."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def eta_text(done: int, total: int, elapsed: float) -> str:
    """'about N s/min left' from the pace so far; empty before the first item is done (no pace to go by)."""
    if done <= 0 or done >= total or elapsed <= 0:
        return ""
    left = elapsed / done * (total - done)
    return f"about {left:.0f} s left" if left < 90 else f"about {left / 60:.0f} min left"


SETTLE_STEPS = 3  # steps timed after the first before a per-step estimate is given


def step_eta(seconds: Sequence[float], left: int) -> str:
    """Time left for `left` more steps from the median of the last 20 step times, leaving out the first step (it
    pays the warm-up: caches, compilation, scorers) so that the estimate settles instead of extrapolating it;
    'estimating…' until SETTLE_STEPS later steps are timed."""
    if left <= 0:
        return ""
    timed = list(seconds[1:])[-20:]
    if len(timed) < SETTLE_STEPS:
        return "estimating time left (the first steps include warm-up)"
    remaining = statistics.median(timed) * left
    return f"about {remaining:.0f} s left" if remaining < 90 else f"about {remaining / 60:.0f} min left"


def with_eta(progress: ProgressFn, clock: Callable[[], float] | None = None) -> ProgressFn:
    """A progress callback whose description gains 'done/total · about N s left', timed per description (a job
    with phases, such as capture then scoring, restarts the clock at each phase)."""
    import time

    now = clock or time.monotonic
    started: dict[str, float] = {}

    def report(done: int, total: int, description: str) -> None:
        moment = now()
        eta = eta_text(done, total, moment - started.setdefault(description, moment))
        progress(done, total, f"{description} · {done}/{total}" + (f" · {eta}" if eta else ""))
    return report
