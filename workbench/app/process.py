"""Start `python app.py` in a child process as a user would (tests, benchmarks, the screenshot script)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(model: str, runs_dir: str, timeout: float = 120, extra_args: tuple[str, ...] = ()
              ) -> tuple[subprocess.Popen, str]:
    """Launch the app offline on a free port; returns (process, url) once the page is served. Its output
    goes to a log file (a pipe nobody reads would fill up and stall the app)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="workbench-app-", suffix=".log", delete=False)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, "app.py", "--model", model, "--port", str(port), "--runs-dir",
                                runs_dir, *extra_args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log.name  # type: ignore[attr-defined]  # what the app printed, for tests
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited: {Path(log.name).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"app did not serve a page within {timeout:.0f} s")
