"""What a visitor may do: a trusted local user, or an untrusted visitor of a hosted app (Spaces, a LAN).

Hosting mode is on when the app binds a non-loopback address or runs on Hugging Face Spaces (`SPACE_ID`),
or with `--hosted`; `--trusted-local` turns it off. In hosting mode datasets come only from the listed
sources (the benchmark catalog downloads into its own hub cache) or the visitor's uploads, never from a
server path (`--allow-server-paths` allows them for a host that wants it), and nobody can load another
model for everyone. Limits that protect the one shared model apply in both modes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_PROMPT_CHARS = 4000  # a prompt holds the one model for everyone: 96,000 characters took 20 s on the organism
UPLOADS_QUOTA_BYTES = 1024 * 2**20  # staged uploads kept on disk in all (per visitor when hosted); oldest go first
VISITORS_QUOTA_BYTES = 8 * 2**30  # every hosted visitor's runs and uploads together; the least recently used go first
VISITOR_IDLE_SECONDS = 24 * 3600  # a hosted visitor's folder untouched this long is removed
HOSTED_JOB_MINUTES = 20.0  # a hosted job (Stage I, Stage II, an evaluation, a comparison, an attack) stops after this
HOSTED_QUEUE = 16  # events waiting for the model at most, when hosted; more are refused with "queue full"
HOSTED_CONCURRENCY = 4  # hosted: events of one kind started at once (each visitor still runs one job at a time, and
# every trace takes the model's lock), so one visitor's pile of requests cannot hold another's behind it
DUAL_USE_REFUSED = ("this hosted app does not steer toward harm or make jailbreak images for real models (its "
                    "dual-use policy); steer with the defending sign, use the model organism, or run it locally")
SERVER_PATH_REFUSED = ("choose one of the listed datasets or upload your own file: this app does not open "
                       "paths on its server")


@dataclass(frozen=True)
class HostPolicy:
    """Whether visitors are trusted with the server's files and the shared model."""

    hosted: bool
    allow_server_paths: bool
    allow_dual_use: bool = False  # attack-making (typographic jailbreaks, steering toward harm) off model organisms
    job_minutes: float | None = None  # a job's wall-clock limit (None: none); it stops at its next step, keeping work
    max_queue: int | None = None  # events allowed to wait for the model (None: unbounded)
    reference_vectors: str | None = None  # the host's own Stage I vectors for the model: the dual-use check's reference

    @property
    def allow_model_switch(self) -> bool:
        return not self.hosted

    def describe(self) -> str:
        if not self.hosted:
            return "trusted local use: server paths and model switching allowed"
        return ("hosting mode: listed datasets and your own uploads only; your runs are yours alone and last as "
                "long as this browser tab (download what you want to keep)"
                + (" (server paths allowed by the host)" if self.allow_server_paths else "")
                + "; the model is fixed by the host"
                + ("" if self.allow_dual_use else "; attack making and steering toward harm only on the organism"
                   + (" (judged against the host's reference direction)" if self.reference_vectors else
                      " (judged by the sign of α and the vector's scales: no reference direction was given)"))
                + (f"; each job stops after {self.job_minutes:g} min" if self.job_minutes else "")
                + (f"; at most {self.max_queue} requests wait for the model" if self.max_queue else "")
                + ("; one model job at a time per visitor" if self.hosted else ""))


def host_policy(host: str, hosted: bool | None = None, trusted_local: bool = False,
                allow_server_paths: bool = False, allow_dual_use: bool = False,
                environ: Mapping[str, str] = os.environ, job_minutes: float | None = None,
                max_queue: int | None = None, reference_vectors: str | None = None) -> HostPolicy:
    """The policy for an app bound to `host`: hosted when asked, on Spaces, or reachable from elsewhere. Hosted,
    jobs stop after `job_minutes` (default HOSTED_JOB_MINUTES) and at most `max_queue` events wait (default
    HOSTED_QUEUE); locally neither is limited unless given."""
    if trusted_local:
        is_hosted = False
    elif hosted is not None:
        is_hosted = hosted
    else:
        is_hosted = bool(environ.get("SPACE_ID")) or host not in LOOPBACK
    for name, value in (("job minutes", job_minutes), ("queue size", max_queue)):
        if value is not None and value <= 0:
            raise ValueError(f"the {name} must be positive, got {value}")
    return HostPolicy(is_hosted, allow_server_paths or not is_hosted, allow_dual_use or not is_hosted,
                      job_minutes if job_minutes is not None else (HOSTED_JOB_MINUTES if is_hosted else None),
                      max_queue if max_queue is not None else (HOSTED_QUEUE if is_hosted else None),
                      reference_vectors)
