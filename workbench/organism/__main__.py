"""`python -m workbench.organism ...` entry point."""

import sys

from ..cli.organism import main

sys.exit(main())
