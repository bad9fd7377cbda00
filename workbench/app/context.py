"""What every tab shares: the `AppContext` (backend, components by name, cancel flags), run pickers,
error translation, progress and the GPU wrapper. Tabs import this module, never ui.py.
"""

from __future__ import annotations

import contextlib
import functools
import html
import inspect
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ..core.progress import Cancelled, with_eta
from ..core.records import DatasetError
from ..core.runs import KINDS
from .backend import SharedModel, Workbench, user_message
from .streams import STREAMS

try:  # Hugging Face Spaces (ZeroGPU): run GPU work inside spaces.GPU when the package is present
    import spaces

    gpu_task: Callable[[Callable[..., Any]], Callable[..., Any]] = spaces.GPU(duration=300)
except ImportError:
    def gpu_task(function: Callable[..., Any]) -> Callable[..., Any]:
        """Outside Spaces GPU work runs as is."""
        return function


_AUTOLINK = re.compile(r"(?i)(?<=:)//|(?<=www)\.|@")  # where GFM's autolinks start (scheme://, www., e-mail)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # inline markup; < > & are HTML-escaped; newlines go
# Every run picker: (component name in ctx.ui, which run kinds it lists).
RUN_PICKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stage1_reopen", ("stage1",)), ("play_run", ("stage1", "stage2")), ("eval_run", ("stage1", "stage2")),
    ("s2_source", ("stage1", "stage2")), ("s2_resume", ("stage2",)), ("export_run", ("stage1", "stage2", "eval")),
    ("rep_runs", ("reproduce",)))


def session_of(request: gr.Request | None) -> str:
    """The browser session a request comes from ("cli" outside Gradio): who owns runs, uploads and jobs."""
    return getattr(request, "session_hash", None) or "cli"


@dataclass
class AppContext:
    """What every tab shares: the host's workbench (the one model; every run only in trusted local use), the
    components by name, and per-session cancel flags. Handlers reach runs and data through `visitor(request)`."""

    host: Workbench
    ui: dict[str, Any] = field(default_factory=dict)
    cancels: dict[tuple[str, str], threading.Event] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # hosting: session -> the one model job it runs
    _running_guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def shared(self) -> SharedModel:
        """The model, its scorers and the host's policy: everything a handler may use without a visitor."""
        return self.host.shared

    def visitor(self, request: gr.Request | None) -> Workbench:
        """This visitor's workbench: in hosting mode only their own runs and uploads exist for them."""
        return self.host.for_visitor(session_of(request) if request is not None else None)

    def stop_session(self, request: gr.Request | str | None) -> None:
        """The visitor left (tab closed, connection lost): every job of theirs stops at its next step."""
        session = request if isinstance(request, str) else session_of(request)
        for (owner, _), flag in list(self.cancels.items()):
            if owner == session:
                flag.set()

    def cancel_flag(self, request: gr.Request | None, job: str) -> threading.Event:
        """A fresh cancel flag for this browser session's next `job` (stage1, evaluate, stage2, attack, reproduce):
        each Cancel button stops its own tab's job, never another one of the same visitor or anyone else's; the
        host's time limit (`HostPolicy.job_minutes`) sets it too."""
        key = (session_of(request), job)
        flag = self.cancels[key] = threading.Event()
        minutes = self.shared.policy.job_minutes
        if minutes:  # the host's wall-clock limit: the job stops at its next step, keeping what it finished
            timer = threading.Timer(minutes * 60, flag.set)
            timer.daemon = True
            timer.start()
        return flag

    def cancel(self, request: gr.Request | None, job: str) -> str:
        key = (session_of(request), job)
        if key in self.cancels and not self.cancels[key].is_set():
            self.cancels[key].set()
            return "Cancelling… the job stops at its next step and keeps what it finished."
        return "Nothing of this tab is running."

    @contextlib.contextmanager
    def job_slot(self, request: gr.Request | None, job: str) -> Iterator[None]:
        """Hosting mode: one model job at a time per visitor; another one asked for meanwhile is refused at once, so
        no visitor can stack requests ahead of everyone else (locally: no limit). A job whose visitor has no open
        event stream (raw requests that join the queue and never listen) is dropped before it runs."""
        if not self.shared.policy.hosted:
            yield
            return
        session = session_of(request)
        if not STREAMS.wait_open(session):
            raise gr.Error("this request's page is not listening for results (no open event stream): nothing was run")
        with self._running_guard:
            if session in self.running:
                raise gr.Error(f"you already have a job running ({self.running[session]}); wait for it to finish or "
                               "cancel it: one job at a time per visitor on this shared model")
            self.running[session] = job
        try:
            yield
        finally:
            with self._running_guard:
                self.running.pop(session, None)

    def one_job(self, job: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator for a handler (plain or streaming) that uses the model: it runs inside `job_slot`."""
        def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
            def request_of(args: tuple, kwargs: dict) -> gr.Request | None:
                found = [a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)]
                return found[0] if found else None

            if inspect.isgeneratorfunction(function):
                @functools.wraps(function)
                def streaming(*args: Any, **kwargs: Any) -> Iterator[Any]:
                    with self.job_slot(request_of(args, kwargs), job):
                        yield from function(*args, **kwargs)
                return streaming

            @functools.wraps(function)
            def plain(*args: Any, **kwargs: Any) -> Any:
                with self.job_slot(request_of(args, kwargs), job):
                    return function(*args, **kwargs)
            return plain
        return decorate

    def canceller(self, job: str) -> Callable[[gr.Request], str]:
        """The click handler of `job`'s Cancel button."""
        def cancel(request: gr.Request) -> str:
            return self.cancel(request, job)
        return cancel

    def refresh_pickers(self, request: gr.Request | None, select: str | None = None, initial: bool = False
                        ) -> list[Any]:
        """Updated choices for every run picker (the runs folder is read once per kind). A picker's value
        changes only to `select`, the run the visitor just made, where it fits; on a new page (`initial`) the
        newest run is shown; otherwise new runs are added, never selected (an evaluation does not swap the
        vectors the playground uses)."""
        wb = self.visitor(request)
        by_kind = {kind: wb.runs.choices(kind, wb.spec) for kind in KINDS}
        updates = []
        for _, kinds in RUN_PICKERS:
            choices = [choice for kind in kinds for choice in by_kind[kind]]
            ids = [value for _, value in choices]
            if select in ids:
                updates.append(gr.update(choices=choices, value=select))
            elif initial:
                updates.append(gr.update(choices=choices, value=ids[0] if ids else None))
            else:
                updates.append(gr.update(choices=choices))
        return updates

    def pickers(self) -> list[Any]:
        return [self.ui[name] for name, _ in RUN_PICKERS]


DELIVERIES_KEPT = 32  # copies handed to browsers; older ones are removed (Gradio keeps its own cached copy)


def deliver(path: str | Path) -> str:
    """A copy of an artefact in a temporary folder of its own, for the browser to download: the runs folder
    itself is never served (it holds every visitor's uploads and runs). Only the newest copies are kept, so
    repeated exports cannot fill the disk."""
    source = Path(path)
    root = Path(tempfile.gettempdir()) / f"workbench-exports-{os.getpid()}"
    root.mkdir(exist_ok=True)
    for old in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)[:-DELIVERIES_KEPT + 1]:
        shutil.rmtree(old, ignore_errors=True)
    target = Path(tempfile.mkdtemp(dir=root)) / source.name
    shutil.copyfile(source, target)
    return str(target)


def md_text(value: object) -> str:
    """Any string shown inside Markdown, as text: HTML escaped and Markdown syntax neutralised, so a label,
    source or file name can never become markup (a form, an overlay, a remote image)."""
    text = html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", str(value)), quote=False).replace("\n", " ")
    return _AUTOLINK.sub("\u2060\\g<0>", text)  # a word joiner: no bare URL, www. or e-mail becomes a link


def adopt_recorded_steering(ctx: AppContext, run_id: str | None, request: gr.Request | None) -> list[Any]:
    """When a visitor picks a run, its vectors' recorded settings fill mode, α and layers (and say so)."""
    if not run_id:
        return [gr.update(), gr.update(), gr.update(), ""]
    try:
        recorded = ctx.visitor(request).recorded_steering(run_id)
    except (ValueError, FileNotFoundError) as error:
        return [gr.update(), gr.update(), gr.update(), user_message(error)]
    if not recorded:
        return [gr.update(), gr.update(), gr.update(), "These vectors record no steering settings (Stage I): mode, "
                "α and layers are yours to choose."]
    layers = recorded.get("layers")
    return [recorded.get("mode", gr.update()), recorded.get("alpha", gr.update()),
            ",".join(map(str, layers)) if layers else "",
            "Mode, α and layers set to what these vectors record (Stage II's training, or a Stage I preset such as "
            "astra); change any to override." + (f" Steered positions: {md_text(recorded['steer_at'])}."
                                                  if recorded.get("steer_at") else "")]


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
            raise gr.Error(html.escape(user_message(error), quote=False)) from None  # a toast renders HTML
    return wrapper


def progress_callback(progress: gr.Progress) -> Callable[[int, int, str], None]:
    """The library's (done, total, description) reports as Gradio's bar, with done/total and the time left."""
    return with_eta(lambda done, total, description: progress(done / max(total, 1), desc=description))
