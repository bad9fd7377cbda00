"""The code stays in the shape ARCHITECTURE.md describes: imports go one way (no cycle, even through an
import inside a function), ruff and mypy are clean, `import workbench` is light, files stay small."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbench"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (top level, functions, TYPE_CHECKING)."""
    files = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for target in targets:
                while target and target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]  # `import a.b.c` imports the module a.b.c or its package
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_imports_go_one_way() -> None:
    graph = import_graph()
    assert "workbench.app.ui" in graph["workbench.app"] and "workbench.core.models" in graph["workbench.steer.steering"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def folder_order() -> list[str]:
    """The folders of `workbench/` from the bottom up, as ARCHITECTURE.md writes them (the one copy of the list)."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("Folder order (bottom up):"))
    return re.findall(r"`(\w+)/`", line)


def upward_imports(graph: dict[str, set[str]], order: list[str]) -> list[str]:
    """Imports from a folder to a folder above it in `order` (the top-level `__init__` and `__main__` modules are the
    front door and the entry point: they may import anything)."""
    rank = {folder: index for index, folder in enumerate(order)}

    def folder(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in rank) else None

    found = []
    for module, targets in graph.items():
        here = folder(module)
        if here is None or module.endswith("__main__"):
            continue
        for target in targets:
            there = folder(target)
            if there is not None and rank[there] > rank[here]:
                found.append(f"{module} -> {target}")
    return sorted(found)


def test_folders_import_only_downwards() -> None:
    order = folder_order()
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert sorted(order) == folders, f"ARCHITECTURE.md's folder order {order} does not list the folders {folders}"
    modules = [p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not modules, f"every module lives in a folder: {modules}"
    assert upward_imports(import_graph(), order) == []


def test_the_order_check_sees_an_upward_import() -> None:
    graph = {"workbench.core.models": {"workbench.steer.steering"}, "workbench.steer.steering": {"workbench.core"},
             "workbench.cli.organism.x": set(), "workbench.organism.__main__": {"workbench.cli.organism"}}
    assert upward_imports(graph, ["core", "steer", "organism", "cli"]) == [
        "workbench.core.models -> workbench.steer.steering"]


def test_the_cycle_finder_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    package = tmp_path / "workbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def thing():\n    from .a import other\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert find_cycle(import_graph(package)) == ["workbench.a", "workbench.b", "workbench.a"]
    finally:
        ROOT = saved


def test_import_workbench_is_light() -> None:
    code = ("import sys, workbench; heavy = [m for m in ('nnsight', 'gradio', 'transformers') if m in sys.modules];"
            "print(heavy); assert not heavy; assert sorted(workbench.__all__) == sorted(set(workbench.__all__));"
            "print(workbench.Steering.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "workbench.steer.steering"]


def test_no_file_is_over_the_size_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these (or state why in the file): {long}"


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_package_requires_ranges_that_admit_the_tested_lock() -> None:
    """pyproject's dependencies are ranges (the package installs beside another torch build), and every version
    requirements.txt pins, the one the tests run on, lies inside its range."""
    import tomllib

    from packaging.requirements import Requirement

    ranges = {Requirement(line).name.lower().replace("_", "-"): Requirement(line) for line in
              tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]}
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            pins[pin.name.lower().replace("_", "-")] = next(iter(pin.specifier)).version
    assert sorted(ranges) == sorted(pins), "pyproject and requirements.txt name different packages"
    for name, requirement in ranges.items():
        assert not any(spec.operator == "==" for spec in requirement.specifier), f"{name} is pinned in pyproject"
        assert requirement.specifier.contains(pins[name]), f"{name}: the tested {pins[name]} is outside {requirement}"
