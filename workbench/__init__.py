"""VLM steering workbench: trace, score and steer vision-language models (SPO-VLM Stage I and II).

Data flows one module per step: data -> activations -> directions -> vectors -> steering.
"""

# nnsight gives every object a `.save` attribute on import; anyio's typed-attribute classes, loaded
# lazily later by Gradio/uvicorn, then reject themselves ("Attribute 'save' is missing its type
# annotation"). Loading anyio's asyncio backend first avoids that.
import anyio._backends._asyncio  # noqa: F401  (import order matters, see above)

__version__ = "0.1.0"
