"""`python -m workbench.organism ...` entry point."""

import sys

from .cli import main

sys.exit(main())
