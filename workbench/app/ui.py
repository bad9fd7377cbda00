"""`create_app()`: the Blocks, one module per tab, wired to the backend; shared helpers for the tabs.

Tabs are built first (each registers its components in `AppContext.ui`), then wired, so a tab's
event can update another tab's components (e.g. a finished Stage I run appears in every run picker).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..catalog import CATALOG
from ..data import DatasetError
from ..progress import Cancelled
from ..runs import KINDS
from .backend import BUILTIN_SETS, Workbench, user_message

try:  # Hugging Face Spaces (ZeroGPU): run GPU work inside spaces.GPU when the package is present
    import spaces

    gpu_task: Callable = spaces.GPU(duration=300)
except ImportError:
    def gpu_task(function: Callable) -> Callable:
        return function

class SafeImage(gr.Image):
    """gr.Image whose upload decoding fails with a message that says what to fix (Gradio's own says only
    "Error"): unreadable files and decompression bombs."""

    def preprocess(self, payload: Any) -> Any:
        import PIL.Image

        try:
            image = super().preprocess(payload)
        except PIL.Image.DecompressionBombError:
            raise gr.Error("the image is too large to open safely; resize it below 40 megapixels") from None
        except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise gr.Error("the image cannot be read (corrupt, empty or not an image); upload a PNG or JPEG") from None
        return image  # the size limit is checked where every image enters the backend (backend._checked_image)


THEME = gr.themes.Soft(primary_hue="teal", neutral_hue="slate")
CSS = """
.output-pair textarea { font-family: ui-monospace, monospace; }
#title { margin-bottom: 0; }
"""
# Every run picker: (component name in ctx.ui, which run kinds it lists).
RUN_PICKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stage1_reopen", ("stage1",)), ("play_run", ("stage1", "stage2")), ("eval_run", ("stage1", "stage2")),
    ("s2_source", ("stage1", "stage2")), ("s2_resume", ("stage2",)), ("export_run", ("stage1", "stage2", "eval")))


@dataclass
class AppContext:
    """What every tab shares: the backend, the components by name, and per-session cancel flags."""

    wb: Workbench
    ui: dict[str, Any] = field(default_factory=dict)
    cancels: dict[str, threading.Event] = field(default_factory=dict)

    def cancel_flag(self, request: gr.Request | None) -> threading.Event:
        """A fresh cancel flag for this browser session's next job."""
        key = getattr(request, "session_hash", None) or "cli"
        self.cancels[key] = threading.Event()
        return self.cancels[key]

    def cancel(self, request: gr.Request | None) -> str:
        key = getattr(request, "session_hash", None) or "cli"
        if key in self.cancels:
            self.cancels[key].set()
            return "Cancelling… the job stops at its next step and keeps what it finished."
        return "Nothing is running."

    def refresh_pickers(self, select: str | None = None) -> list[Any]:
        """Updated choices for every run picker, selecting `select` where it fits (the runs folder is read
        once per kind, not once per picker)."""
        by_kind = {kind: self.wb.runs.choices(kind, self.wb.spec) for kind in KINDS}
        updates = []
        for _, kinds in RUN_PICKERS:
            choices = [choice for kind in kinds for choice in by_kind[kind]]
            ids = [value for _, value in choices]
            value = select if select in ids else (ids[0] if ids else None)
            updates.append(gr.update(choices=choices, value=value))
        return updates

    def pickers(self) -> list[Any]:
        return [self.ui[name] for name, _ in RUN_PICKERS]


def run_picker(label: str, **options: Any) -> gr.Dropdown:
    """A dropdown of run ids. Its choices are refreshed per browser session, so API callers may also name a
    run created later (custom values); every id is validated by the RunStore before use."""
    return gr.Dropdown([], label=label, allow_custom_value=True, **options)


def friendly_errors(function: Callable) -> Callable:
    """Turn library errors into a gr.Error with a message that says what to fix (and no server paths)."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (ValueError, DatasetError, FileNotFoundError, Cancelled, KeyError) as error:
            raise gr.Error(user_message(error)) from None
    return wrapper


def progress_callback(progress: gr.Progress) -> Callable[[int, int, str], None]:
    return lambda done, total, description: progress(done / max(total, 1), desc=description)


def dataset_choices(model_spec: str) -> list[str]:
    names = [s for s in BUILTIN_SETS if model_spec == "organism" or not s.startswith("organism:")]
    return names + sorted(CATALOG)


def default_dataset(model_spec: str) -> str:
    return "organism:train" if model_spec == "organism" else "demo"


def create_app(model_spec: str, runs_dir: str | Path = "runs") -> gr.Blocks:
    """The workbench UI for `model_spec` (loaded on first use), with runs kept in `runs_dir`."""
    from .tabs import data, evaluate, export, playground, stage1, stage2

    ctx = AppContext(Workbench(model_spec, runs_dir))
    tabs = (data, stage1, playground, stage2, evaluate, export)
    with gr.Blocks(title="VLM steering workbench") as app:
        gr.Markdown(f"# VLM steering workbench\nModel **`{model_spec}`** · SPO-VLM two-stage defence: Stage I "
                    "finds where harmful and benign separate and steers against it; Stage II refines the "
                    "steering by preference optimisation with the model frozen.", elem_id="title")
        with gr.Tabs():
            for tab in tabs:
                tab.build(ctx)
        for tab in tabs:
            tab.wire(ctx)
        app.load(lambda: ctx.refresh_pickers(), None, ctx.pickers(), api_visibility="private")
    return app
