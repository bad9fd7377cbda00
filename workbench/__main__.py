"""`python -m workbench` entry point."""

import os
import sys

from .cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: see exit_process
    from .distributed import exit_process

    exit_process(code)
sys.exit(code)
