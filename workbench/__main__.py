"""`python -m workbench` (and the `workbench` command) entry point."""

import sys


def run() -> None:
    """Start eval/compare's scorer process before the library's imports, then run the CLI."""
    from .rewards.process import start_early

    start_early(sys.argv[1:])  # the scorers load in a second process while this one imports and loads the model
    from .cli import main
    from .distributed import exit_process

    exit_process(main())  # sys.exit, or under torchrun os._exit (see exit_process)


if __name__ == "__main__":
    run()
