"""`python -m workbench` (and the `workbench` command) entry point."""

import sys


def run() -> None:
    """Start eval/compare's scorer process, import what the command needs with the collector paused, run the CLI."""
    from .rewards.process import early_started, start_early
    from .startup import collector_paused, libraries_for, preimport

    argv = sys.argv[1:]
    with collector_paused():  # imports only (startup.py): the model and data load after it, collector on
        start_early(argv)  # the scorers load in a second process while this one imports and loads the model
        preimport(libraries_for(argv, scorers_here=not early_started()))
    from .cli import main
    from .distributed import exit_process

    exit_process(main())  # threads joined, atexit run, streams flushed; no module teardown (see exit_process)


if __name__ == "__main__":
    run()
