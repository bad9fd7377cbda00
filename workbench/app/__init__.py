"""The Gradio shell over the library: `create_app()` builds the Blocks, `main()` parses flags and launches.

This first version has one tab (Stage I + steering playground); the full UI is tracked in its own issue.
"""

from __future__ import annotations

import argparse

from .playground import create_app

__all__ = ["create_app", "main"]


def default_model() -> str:
    """The organism when it is shipped in assets/, else a tiny random LLaVA."""
    from ..models import ORGANISM_DIR

    return "organism" if ORGANISM_DIR.exists() else "tiny-random:llava"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="VLM steering workbench (Gradio UI)")
    parser.add_argument("--model", default=None, help="model spec (default: the organism, else tiny-random:llava)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    app = create_app(args.model or default_model())
    app.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port)
