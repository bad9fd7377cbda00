"""The scorers (Detoxify or its fallback, open_clip) in a second process, so `eval` loads them while it loads the VLM.

Loading the scorers is mostly imports (scikit-learn, open_clip, torchvision) that hold one core and the GIL; in
a child process they run beside the model load instead of after it. The child runs the same
`ToxicityScorer.create` and `load_clip` as the in-process path on the same texts and pixels, so the scores are the
same numbers (tested). `python -m workbench eval|compare` starts the child before it imports the library
(`start_early`: a guess from argv, which `take_early` checks against the parsed arguments); without an early
child (`cli.main` called from Python, --score-in-process) the scorers load in process as before. This module
imports only the standard library at the top, because it runs first.

Protocol: one JSON object per line. The child's first line says what loaded; then each request
(`{"toxicity": texts}`, or `{"clip": texts, "sizes": [[w, h], ...], "pixels": file}` where the file, in a private
temporary folder, holds the images' raw RGB bytes: measured 0.06 s per 100 MB against 0.25 s through the pipe)
gets `{"scores": [...]}` or `{"error": "..."}`. The child exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..startup import command_to_run
from .clip_names import default_clip_spec

COMMANDS = ("eval", "compare")  # the CLI commands that score in a child process (unless --score-in-process)


@dataclass(frozen=True)
class ScorerSpec:
    """What the child loads; equal specs load the same scorers."""

    clip: str
    detoxify_checkpoint: str | None = None
    detoxify_config: str | None = None

    def argv(self) -> list[str]:
        extra = [f"--detoxify-checkpoint={self.detoxify_checkpoint}"] if self.detoxify_checkpoint else []
        extra += [f"--detoxify-config={self.detoxify_config}"] if self.detoxify_config else []
        return [sys.executable, "-m", "workbench.rewards.process", f"--clip={self.clip}", *extra]


class ScorerProcess:
    """A running child; `scorers()` waits for it to load and returns stand-ins for the two scorers."""

    def __init__(self, spec: ScorerSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._ready: dict[str, Any] | None = None
        self.folder = tempfile.mkdtemp(prefix="workbench-scorer-")  # the pixels of clip requests, one file each
        self._child = subprocess.Popen(spec.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       start_new_session=True)  # Ctrl-C is the parent's, not the child's
        atexit.register(self.close)

    def _read(self) -> dict[str, Any]:
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line:
            code = self._child.wait()
            raise ChildProcessError(f"the scorer process stopped (exit code {code}; its message, if any, is above); "
                                    "rerun with --score-in-process to score in this process")
        return json.loads(line)

    def _loaded(self) -> dict[str, Any]:
        """The child's first line (what loaded), read once."""
        with self._lock:
            if self._ready is None:
                self._ready = self._read()
        if "error" in self._ready:
            raise ChildProcessError(f"the scorer process could not load the scorers: {self._ready['error']}")
        return self._ready

    def _request(self, payload: dict[str, Any]) -> list[Any]:
        self._loaded()
        with self._lock:
            assert self._child.stdin is not None
            try:
                self._child.stdin.write(json.dumps(payload).encode("utf-8") + b"\n")
                self._child.stdin.flush()
            except BrokenPipeError:
                pass  # _read reports the stop with the exit code
            reply = self._read()
        if "error" in reply:
            raise ChildProcessError(f"scorer process: {reply['error']}")
        return reply["scores"]

    def scorers(self) -> tuple[Any, Any, str | None]:
        """What `load_scorers` gives in process, answered by the child; waits for it to load."""
        from .toxicity import ToxicityScorer

        loaded = self._loaded()
        toxicity = ToxicityScorer(loaded["toxicity"], lambda texts: self._request({"toxicity": texts}), loaded["note"])
        clip = RemoteClip(loaded["clip"], self) if loaded["clip_error"] is None else None
        return toxicity, clip, loaded["clip_error"]

    def close(self) -> None:
        """End the child (closing its stdin ends it; one still loading is terminated)."""
        if self._child.poll() is None:
            try:
                if self._child.stdin is not None:
                    self._child.stdin.close()
                self._child.wait(timeout=2 if self._ready is not None else 0.1)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self._child.kill()
                self._child.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        atexit.unregister(self.close)


@dataclass
class RemoteClip:
    """The child's `ClipScorer`: same name, same call."""

    name: str
    process: ScorerProcess

    def __call__(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]:
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return []
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        with tempfile.NamedTemporaryFile(dir=self.process.folder, delete=False) as handle:  # owner-only (0600)
            for image in rgb:
                handle.write(image.tobytes())
        try:
            return self.process._request({"clip": list(texts), "sizes": [list(image.size) for image in rgb],
                                          "pixels": handle.name})
        finally:
            os.unlink(handle.name)


_EARLY: ScorerProcess | None = None


def _reward_parser() -> argparse.ArgumentParser:
    """The arguments that decide the scorers, as `cli_args.add_reward_args` and `add_model_args` name them."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", default="organism")
    parser.add_argument("--clip", default=None)
    parser.add_argument("--detoxify-checkpoint", default=None)
    parser.add_argument("--detoxify-config", default=None)
    parser.add_argument("--score-in-process", action="store_true")
    return parser


def spec_for(model: str, clip: str | None, detoxify_checkpoint: str | None, detoxify_config: str | None
             ) -> ScorerSpec:
    """The scorers a command with these arguments loads (the organism's own CLIP unless one is named)."""
    return ScorerSpec(clip or default_clip_spec(model), detoxify_checkpoint, detoxify_config)


def spare_core() -> bool:
    """Whether each of this machine's workbench processes (torchrun's LOCAL_WORLD_SIZE, else 1) has a second core
    for its scorer process; without one the child only competes (measured: two torchrun ranks with a child each
    on 2 cores took 1.8x as long as without)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores >= 2 * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def start_early(argv: Sequence[str]) -> None:
    """Before the CLI imports the library: start the child for an `eval`/`compare` command line when a core is free
    for it (a guess that `take_early` checks; a wrong or unused one is ended at exit)."""
    global _EARLY
    if command_to_run(argv) not in COMMANDS or not spare_core():
        return
    known, _ = _reward_parser().parse_known_args(list(argv[1:]))
    if not known.score_in_process:
        _EARLY = ScorerProcess(spec_for(known.model, known.clip, known.detoxify_checkpoint, known.detoxify_config))


def early_started() -> bool:
    """Whether `start_early` started a child (then this process does not load the scorers unless told to)."""
    return _EARLY is not None


def take_early(spec: ScorerSpec) -> ScorerProcess | None:
    """The early child when it loads exactly `spec` (else it is ended and the caller loads in process: a child
    started this late would only add its start-up to the wait)."""
    global _EARLY
    early, _EARLY = _EARLY, None
    if early is not None and early.spec != spec:
        early.close()
        return None
    return early


def _images(sizes: Sequence[Sequence[int]], pixels: bytes) -> list[Any]:
    """The RGB images of a clip request, back from their raw bytes (which must be exactly theirs)."""
    from PIL import Image

    if len(pixels) != sum(3 * width * height for width, height in sizes):
        raise ValueError(f"{len(pixels)} bytes of pixels for images of sizes {sizes}")
    images, start, view = [], 0, memoryview(pixels)
    for width, height in sizes:
        end = start + 3 * width * height
        part = cast(bytes, view[start:end])  # PIL reads any buffer: no copy of a large photo
        images.append(Image.frombuffer("RGB", (width, height), part, "raw", "RGB", 0, 1))
        start = end
    return images


def load_scorers(spec: ScorerSpec) -> tuple[Any, Any, str | None]:
    """(toxicity, clip, why there is no clip): Detoxify or its named fallback, and open_clip (None when it does not
    load, with the reason, so the caller can warn and go on: an offline hub, a missing folder)."""
    from .toxicity import ToxicityScorer
    from .visual import load_clip

    toxicity = ToxicityScorer.create(checkpoint=spec.detoxify_checkpoint, config_dir=spec.detoxify_config)
    try:
        return toxicity, load_clip(spec.clip), None
    except Exception as error:  # noqa: BLE001 - reported by the caller, which goes on without CLIP
        return toxicity, None, str(error)


def _serve(spec: ScorerSpec) -> None:
    """The child: load, say what loaded, then answer requests until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a library's print goes to stderr, never into the protocol
    def send(message: dict[str, Any]) -> None:
        try:
            protocol.write(json.dumps(message) + "\n")
            protocol.flush()
        except BrokenPipeError:
            os._exit(0)  # the parent is gone (killed, or done without us)

    try:
        toxicity, clip, clip_error = load_scorers(spec)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
        send({"error": f"{type(error).__name__}: {error}"})
        return
    send({"toxicity": toxicity.name, "note": toxicity.note, "clip": clip.name if clip else None,
          "clip_error": clip_error})
    requests = sys.stdin.buffer
    while line := requests.readline():
        request = json.loads(line)
        try:
            if "toxicity" in request:
                scores: list[float] = toxicity(request["toxicity"])
            else:
                with open(request["pixels"], "rb") as handle:
                    images = _images(request["sizes"], handle.read())
                scores = clip(images, request["clip"]) if clip is not None else []
            send({"scores": scores})
        except Exception as error:  # noqa: BLE001 - the parent raises it with this message
            send({"error": f"{type(error).__name__}: {error}"})
    protocol.flush()
    os._exit(0)  # stdin closed: nothing of ours is left to write, and the interpreter's teardown takes a second


if __name__ == "__main__":
    from ..startup import SCORER_LIBRARIES, collector_paused, preimport

    parsed = _reward_parser().parse_args()
    with collector_paused():  # imports only: the checkpoints load after it, with the collector on
        preimport(SCORER_LIBRARIES)
    _serve(ScorerSpec(parsed.clip, parsed.detoxify_checkpoint, parsed.detoxify_config))
