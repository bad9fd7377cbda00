"""The Gradio shell over the library: `create_app()` builds the Blocks, `main()` parses flags and launches."""

from __future__ import annotations

import argparse
from pathlib import Path

from .hosting import HOSTED_CONCURRENCY, host_policy
from .ui import CSS, THEME, create_app

__all__ = ["create_app", "main", "default_model", "launch_options"]

MAX_UPLOAD = "50mb"


def default_model() -> str:
    """The organism when it is shipped in assets/, else a tiny random LLaVA."""
    from ..core.models import ORGANISM_DIR

    return "organism" if ORGANISM_DIR.exists() else "tiny-random:llava"


def launch_options(runs_dir: str | Path) -> dict:
    """launch() arguments shared by app.py, tests and benchmarks: theme, upload limit, served folders, the
    event-stream watch. No folder is served as such: the runs folder is blocked (it holds every visitor's uploads
    and runs), and exports reach the browser as copies in a temporary folder of their own."""
    from starlette.middleware import Middleware

    from .streams import StreamWatch

    return dict(theme=THEME, css=CSS, max_file_size=MAX_UPLOAD, allowed_paths=[],
                blocked_paths=[str(Path(runs_dir).resolve())], footer_links=["api", "gradio", "settings"],
                app_kwargs={"middleware": [Middleware(StreamWatch)]})  # a hosted job runs only while watched


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="VLM steering workbench (Gradio UI)")
    parser.add_argument("--model", default=None, help="model spec: organism (default), tiny-random:<arch>, a local "
                        "folder or a Hugging Face id")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--runs-dir", default="runs", help="where runs are kept (reopened after a restart)")
    parser.add_argument("--hosted", action="store_true", default=None,
                        help="hosting mode even on a loopback address (on by itself on Spaces or a non-loopback "
                        "--host): listed datasets and uploads only, the model fixed")
    parser.add_argument("--trusted-local", action="store_true", help="turn hosting mode off (you trust every visitor)")
    parser.add_argument("--allow-server-paths", action="store_true",
                        help="in hosting mode, still let visitors name dataset files on this server")
    parser.add_argument("--allow-dual-use", action="store_true",
                        help="in hosting mode, allow steering toward harm and jailbreak images on real models")
    parser.add_argument("--job-minutes", type=float, default=None,
                        help="stop any job after this many minutes (hosted default 20; locally none)")
    parser.add_argument("--max-queue", type=int, default=None,
                        help="requests allowed to wait for the model (hosted default 16; locally unbounded)")
    parser.add_argument("--reference-vectors", default=None,
                        help="hosted: your own Stage I vectors.safetensors for this model; the dual-use check then "
                        "judges each visitor's steering by its effect along that direction, not by the sign of α")
    args = parser.parse_args(argv)
    policy = host_policy(args.host, args.hosted, args.trusted_local, args.allow_server_paths, args.allow_dual_use,
                         job_minutes=args.job_minutes, max_queue=args.max_queue,
                         reference_vectors=args.reference_vectors)
    print(f"workbench: {policy.describe()}")
    if policy.hosted:  # files sent to Gradio are cached before any handler (and quota) sees them
        from gradio.utils import get_upload_folder

        from .storage import GRADIO_CACHE_BYTES, GRADIO_CACHE_FILES, keep_gradio_cache_bounded

        keep_gradio_cache_bounded(Path(get_upload_folder()))
        print(f"workbench: Gradio's upload cache kept under {GRADIO_CACHE_BYTES // 2**30} GB and "
              f"{GRADIO_CACHE_FILES:,} files, oldest removed first")
    app = create_app(args.model or default_model(), args.runs_dir, policy, preload_scorers=policy.hosted)
    # nnsight traces are not thread-safe: every trace takes the model's lock. Locally one request of a kind runs at
    # a time; hosted, a few start at once and each visitor is held to one job (AppContext.job_slot), so a visitor's
    # flood is refused at once instead of queueing ahead of everyone else.
    concurrency = HOSTED_CONCURRENCY if policy.hosted else 1
    app.queue(default_concurrency_limit=concurrency, max_size=policy.max_queue).launch(
        server_name=args.host, server_port=args.port, **launch_options(args.runs_dir))
