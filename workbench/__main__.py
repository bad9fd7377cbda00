"""`python -m workbench` entry point."""

from .cli import main
from .distributed import exit_process

exit_process(main())  # sys.exit, or under torchrun os._exit (see exit_process)
