"""The one place nnsight is imported, with the import-order fix it needs beside Gradio.

nnsight gives every object a `.save` attribute on import; anyio's typed-attribute classes, loaded lazily
later by Gradio/uvicorn, then reject themselves ("Attribute 'save' is missing its type annotation").
Loading anyio's asyncio backend before nnsight avoids that. Only modules that trace import this, so
`import workbench` (and the CLI's --help) pull in neither.
"""

from __future__ import annotations

try:
    import anyio._backends._asyncio  # noqa: F401  (must precede nnsight, see above)
except ImportError:  # no anyio (no Gradio): nothing to protect
    pass

import nnsight
from nnsight import NNsight

__all__ = ["NNsight", "nnsight"]
