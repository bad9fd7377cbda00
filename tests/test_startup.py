"""The CLI's start-up imports with the collector paused (`startup.py`): the collector is back on for the work."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workbench.startup import MODEL_LIBRARIES, SCORER_LIBRARIES, collector_paused, libraries_for, preimport

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_collector_paused_freezes_what_the_block_built_and_turns_the_collector_back_on() -> None:
    out = _run("""
        import gc
        from workbench.startup import collector_paused
        before = gc.get_freeze_count()
        with collector_paused():
            inside = gc.isenabled()
            made = [[i] for i in range(1000)]
        print(inside, gc.isenabled(), gc.get_freeze_count() - before >= 1000, gc.is_tracked(made))
        gc.disable()
        with collector_paused():  # turned off by the caller: left off, nothing frozen
            pass
        print(gc.isenabled())
    """)
    assert out.split() == ["False", "True", "True", "True", "False"]


def test_the_collector_is_back_on_even_when_an_import_in_the_block_fails() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with collector_paused():
            raise RuntimeError("an import failed")
    assert gc.isenabled()
    gc.unfreeze()  # this test process's objects go back to being collected


def test_preimport_skips_what_fails_and_leaves_the_error_to_the_code_that_needs_it(tmp_path: Path) -> None:
    (tmp_path / "broken_at_import.py").write_text("raise RuntimeError('broken')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        preimport(["no_such_module_xyz", "broken_at_import", "json"])
        assert "json" in sys.modules and "broken_at_import" not in sys.modules
        with pytest.raises(RuntimeError, match="broken"):
            __import__("broken_at_import")  # the real import still reports it
    finally:
        sys.path.remove(str(tmp_path))


def test_libraries_for_a_command() -> None:
    assert libraries_for(["notebook", "run"], scorers_here=True) == ("workbench.cli",)
    assert libraries_for(["eval", "--help"], scorers_here=True) == ("workbench.cli",)
    assert libraries_for([], scorers_here=True) == ("workbench.cli",)
    assert libraries_for(["stage1"], scorers_here=True) == ("workbench.cli", *MODEL_LIBRARIES)
    assert libraries_for(["eval"], scorers_here=False) == ("workbench.cli", *MODEL_LIBRARIES)
    assert libraries_for(["eval"], scorers_here=True) == ("workbench.cli", *MODEL_LIBRARIES, *SCORER_LIBRARIES)
    assert libraries_for(["stage2"], scorers_here=True)[-len(SCORER_LIBRARIES):] == SCORER_LIBRARIES


def test_the_cli_runs_its_command_with_the_collector_on_and_the_imports_frozen() -> None:
    """`python -m workbench`'s entry: the command (here a stand-in for cli.main) sees the collector on, the model
    libraries already imported, and start-up's objects frozen out of its collections."""
    out = _run("""
        import gc, sys
        import workbench.cli
        def main():
            print(gc.isenabled(), "transformers.image_processing_utils" in sys.modules, gc.get_freeze_count() > 100000)
            return 0
        workbench.cli.main = main
        sys.argv = ["workbench", "stage1", "--model", "organism"]
        from workbench.__main__ import run
        run()
    """)
    assert out.split() == ["True", "True", "True"]


def test_the_cli_exit_joins_threads_runs_atexit_and_flushes_before_leaving(tmp_path: Path) -> None:
    """`exit_process` skips only the module teardown: a thread still writing finishes, an idle thread pool left
    open does not hang the exit, atexit handlers run, what was printed to a pipe arrives, and the exit code is the
    command's."""
    written = tmp_path / "from-a-thread.txt"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import atexit, threading, time
        from concurrent.futures import ThreadPoolExecutor
        from workbench.distributed import exit_process
        pool = ThreadPoolExecutor(2)  # left open, as a library may: its idle workers must not block the exit
        pool.submit(time.sleep, 0.01).result()
        def late():
            time.sleep(0.5)
            with open({str(written)!r}, "w") as handle:
                handle.write("finished")
        threading.Thread(target=late).start()
        atexit.register(lambda: print("atexit ran"))
        print("printed before exit", end=" ")  # a pipe is block-buffered: lost without the flush
        exit_process(3)
    """)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout.split() == ["printed", "before", "exit", "atexit", "ran"]
    assert written.read_text() == "finished"
