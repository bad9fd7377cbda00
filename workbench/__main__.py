"""`python -m workbench` (and the `workbench` command) entry point."""

def run() -> None:
    """Run the CLI and exit with its code (under torchrun through `distributed.exit_process`)."""
    from .cli.main import main
    from .core.distributed import exit_process

    exit_process(main())


if __name__ == "__main__":
    run()
