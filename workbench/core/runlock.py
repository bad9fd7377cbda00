"""One writer per run folder: a lock file with the owner's pid, taken atomically, with stale locks detected.

A Stage II run (or any job that writes into a run folder) holds the lock while it writes; a second writer
-- another process, or another thread of the app -- is refused with a message instead of interleaving
its steps with the first. A lock whose process has died is stale and is taken over; the runs folder
then reports such a run as interrupted, not running.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".writer.lock"
_HELD: set[Path] = set()  # folders this process holds (threads share a pid, so the pid alone cannot tell)
_GUARD = threading.Lock()


class RunBusy(ValueError):
    """The run folder is being written by another job; the message says by whom and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class RunLock:
    """The writer lock of `folder` (use as a context manager, or acquire/release)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_FILE

    def owner(self) -> int | None:
        """The pid holding the lock, or None when it is free or stale."""
        try:
            pid = int(self.path.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if pid == os.getpid():
            return pid if self.folder in _HELD else None
        return pid if _alive(pid) else None

    def check_free(self) -> None:
        """Refuse early, before any work, when another writer holds the folder."""
        owner = self.owner()
        if owner is not None:
            where = "this app" if owner == os.getpid() else f"process {owner}"
            raise RunBusy(f"run {self.folder.name} is being written by {where}; wait for that job to finish or "
                          "cancel it (nothing was changed)")

    def acquire(self) -> None:
        with _GUARD:
            self.check_free()
            self.folder.mkdir(parents=True, exist_ok=True)
            for attempt in range(2):
                try:
                    descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    break
                except FileExistsError:
                    if attempt or self.owner() is not None:  # another job took it between the check and now
                        raise RunBusy(f"run {self.folder.name} was just taken by another job (nothing was "
                                      "changed)") from None
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
            with os.fdopen(descriptor, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            _HELD.add(self.folder)

    def release(self) -> None:
        with _GUARD:
            if self.folder in _HELD:
                _HELD.discard(self.folder)
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()
