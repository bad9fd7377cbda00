"""An evaluation's judged responses on disk as they finish, so a killed run resumes where it stopped.

Each process appends to `partial-<rank>.jsonl` in the run folder: a header line with the run's fingerprint
(model, data, vectors, steering, decoding, judges), then one line per judged response. `--resume` reads
every partial file, refuses if any fingerprint differs from the new run's (the numbers would mix two
settings), skips what is done and appends the rest. When the run completes, generations.jsonl and
metrics.json are written and the partial files removed. A line cut short by a kill is dropped and redone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PARTIAL_GLOB = "partial-*.jsonl"


def partial_files(folder: str | Path) -> list[Path]:
    """The partial files an interrupted evaluation left in `folder` (none: nothing to resume)."""
    return sorted(Path(folder).glob(PARTIAL_GLOB))


class EvalStream:
    """Appends judged responses to this process's partial file; knows which (condition, index) are done."""

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any], rank: int = 0, resume: bool = False) -> None:
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.path = self.folder / f"partial-{rank}.jsonl"
        existing = partial_files(self.folder)
        if existing and not resume:
            raise FileExistsError(f"{self.folder} holds an interrupted evaluation ({existing[0].name}); pass "
                                  "--resume to continue it, or choose a new --out")
        self._done: dict[tuple[str, int], dict[str, Any]] = {}
        for path in existing:
            self._read(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _cut_unfinished_line(self.path)
        else:
            self._append([{"fingerprint": self.fingerprint}])

    def _read(self, path: Path) -> None:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            return
        header = json.loads(lines[0]).get("fingerprint")
        if header != self.fingerprint:
            changed = sorted(k for k in set(header or {}) | set(self.fingerprint)
                             if (header or {}).get(k) != self.fingerprint.get(k))
            raise ValueError(f"--resume: {path.name} was made with other settings ({', '.join(changed)} differ); "
                             "rerun with the same settings, or choose a new --out")
        for number, line in enumerate(lines[1:], 2):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # the line a kill cut short: redone
                    continue
                raise ValueError(f"--resume: {path.name} line {number} is damaged; choose a new --out") from None
            self._done[(row.pop("condition"), int(row["index"]))] = row

    def done(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Judged responses already on disk (as written: one dict each), by (condition, record index)."""
        return dict(self._done)

    def write(self, condition: str, rows: list[dict[str, Any]]) -> None:
        """Append one batch's judged responses (dicts with an "index") and make sure they reach the disk."""
        self._append([{"condition": condition, **row} for row in rows])
        for row in rows:
            self._done[(condition, int(row["index"]))] = dict(row)

    def _append(self, rows: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self) -> None:
        """Remove the partial files once generations.jsonl and metrics.json hold everything."""
        for path in partial_files(self.folder):
            path.unlink(missing_ok=True)


def _cut_unfinished_line(path: Path) -> None:
    """Drop a last line a kill cut short (no newline), so the next append starts a line of its own."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])
