"""The model's lock: re-entrant, and handed to waiting threads in the order they asked.

nnsight traces are not thread-safe, so every trace takes the model's lock. `threading.RLock` lets a thread that
releases it and asks again at once (a Stage II loop, one trace after another) take it back ahead of threads
already waiting, so one visitor's long job could keep another's short request waiting for many of its traces.
`FairLock` queues every acquirer: another visitor waits for at most the trace now running.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class FairLock:
    """A re-entrant FIFO lock (`with lock:`); `acquire` blocks until every earlier waiter has had its turn."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._waiting: deque[tuple[int, threading.Event]] = deque()

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._guard:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._waiting:
                self._owner, self._depth = me, 1
                return True
            turn = threading.Event()
            self._waiting.append((me, turn))
        turn.wait()  # release() made this thread the owner before setting the event
        return True

    def release(self) -> None:
        with self._guard:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock this thread does not hold")
            self._depth -= 1
            if self._depth:
                return
            if self._waiting:
                self._owner, turn = self._waiting.popleft()
                self._depth = 1
                turn.set()
            else:
                self._owner = None

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()
