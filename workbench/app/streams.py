"""Which browser sessions have their event stream open: a job nobody can see is dropped before it runs.

Gradio runs a queued event even when its client never opened the stream that reports it (`/queue/data`): a
hostile visitor can join the queue with raw requests and let the model work for nobody. `StreamWatch`, an ASGI
middleware installed through `launch(app_kwargs=...)` (a public Gradio argument), counts each session's open
streams; `OpenStreams.wait_open` lets a hosted job start only when its visitor is listening.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

STREAM_PATH = "/queue/data"  # Gradio's event stream (under its API prefix), one per session at a time
# A browser joins the queue first and opens the stream right after: a job waits this long for it before it is
# dropped (a job starts only after its turn in the queue, so the wait is normally zero).
STREAM_GRACE_S = 10.0


class OpenStreams:
    """Open event streams per session (thread-safe: streams open on the server's loop, jobs wait in workers)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._changed = threading.Condition()
        self.watching = False  # True once a StreamWatch serves requests: without one nothing is known
        self._listeners: list[Callable[[str], None]] = []

    def on_last_close(self, listener: Callable[[str], None]) -> None:
        """Call `listener(session)` when a session's last stream closes (Gradio closes it only once every event of
        the session has finished, so a close with a job still running means the visitor went away)."""
        self._listeners.append(listener)

    def opened(self, session: str) -> None:
        with self._changed:
            self._open[session] += 1
            self._changed.notify_all()

    def closed(self, session: str) -> None:
        with self._changed:
            self._open[session] -= 1
            last = self._open[session] <= 0
            if last:
                del self._open[session]
            self._changed.notify_all()
        for listener in self._listeners if last else ():
            listener(session)

    def is_open(self, session: str) -> bool:
        with self._changed:
            return self._open[session] > 0

    def wait_open(self, session: str, timeout: float = STREAM_GRACE_S) -> bool:
        """True when `session` has an open stream within `timeout` seconds (at once when nothing is watched)."""
        if not self.watching:
            return True
        with self._changed:
            return self._changed.wait_for(lambda: self._open[session] > 0, timeout=timeout)


STREAMS = OpenStreams()  # one app per process: the middleware and the jobs share this registry


class StreamWatch:
    """ASGI middleware: counts a session's `/queue/data` stream from its request to the end of its response."""

    def __init__(self, app: ASGIApp, streams: OpenStreams = STREAMS) -> None:
        self.app, self.streams = app, streams
        streams.watching = True

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        session = _stream_session(scope)
        if session is None:
            await self.app(scope, receive, send)
            return
        self.streams.opened(session)
        try:
            await self.app(scope, receive, send)
        finally:
            self.streams.closed(session)


def _stream_session(scope: Scope) -> str | None:
    """The session hash of an event-stream request, else None."""
    if scope.get("type") != "http" or scope.get("method") != "GET" or not scope.get("path", "").endswith(STREAM_PATH):
        return None
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
    return values[0] if values else None
