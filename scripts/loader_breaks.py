"""Re-apply the four loader defects of the benchmark-loaders issue to a scratch copy and show which tests
catch each: `python scripts/loader_breaks.py` (about a minute; the working tree is never touched).

1. name-only image fallback (a missing image taken from any folder with that file name)
2. CSV lines split before parsing (quoted newlines dropped)
3. a broad glob for XSTest (every CSV below the folder read as prompts)
4. git-LFS pointers read as data
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOG = "workbench/data/catalog.py"
BREAKS = {
    "name-only image fallback": (
        "    path = images / relative\n    if not path.is_file():\n        raise MissingImage(path)",
        "    path = images / relative\n    if not path.is_file():\n"
        "        found = next(images.parent.rglob(Path(relative).name), None) if images else None\n"
        "        if found is None:\n            raise MissingImage(path)\n        path = found"),
    "CSV split into lines first": (
        '        with open(path, encoding="utf-8-sig", newline="") as handle:  # newline="": quoted newlines kept\n'
        "            yield from csv.DictReader(handle)",
        '        yield from csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines())'),
    "broad glob for XSTest": (
        '(Layout("xstest_prompts.csv"), Layout("xstest_v2_prompts.csv"), _HUB_SHARDS)', '(Layout("**/*.csv"),)'),
    "git-LFS pointer read as data": (
        "def _rows(path: Path) -> Iterator[Row]:\n    _check_not_lfs(path)", "def _rows(path: Path) -> Iterator[Row]:"),
}


def main() -> int:
    missed = []
    for name, (original, broken) in BREAKS.items():
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch)
            shutil.copytree(ROOT / "workbench", copy / "workbench")
            shutil.copytree(ROOT / "tests", copy / "tests")
            shutil.copy(ROOT / "pytest.ini", copy / "pytest.ini")
            source = (copy / CATALOG).read_text()
            if original not in source:
                print(f"{name}: the code this break edits has changed; update scripts/loader_breaks.py")
                return 2
            (copy / CATALOG).write_text(source.replace(original, broken))
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_catalog.py"], cwd=copy,
                                    capture_output=True, text=True)
            caught = [line.split(" - ")[0].removeprefix("FAILED ") for line in result.stdout.splitlines()
                      if line.startswith("FAILED")]
            print(f"{name}: " + (", ".join(caught) if caught else "NOT CAUGHT"))
            missed += [] if caught else [name]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
