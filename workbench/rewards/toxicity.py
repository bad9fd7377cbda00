"""Toxicity scores in [0, 1] per text, from Detoxify or, offline, from a named fallback.

`ToxicityScorer.create()` uses Detoxify from a local checkpoint if given, else the named model when its weights are
already on this machine (torch hub's cache) or `download=True` asks for them; otherwise, and when Detoxify cannot
load, the named fallback alt-profanity-check, chosen without touching the network. The scorer's `name` always says
which one ran, so results never hide a swap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ToxicityScorer:
    name: str  # e.g. "detoxify:original" or "alt-profanity-check (offline fallback)"
    _score: Callable[[list[str]], list[float]]
    note: str = ""

    def __call__(self, texts: Sequence[str]) -> list[float]:
        texts = [t if t.strip() else "." for t in texts]
        return [float(x) for x in self._score(list(texts))] if texts else []

    @classmethod
    def create(cls, model: str = "original", checkpoint: str | None = None, config_dir: str | None = None,
               allow_fallback: bool = True, download: bool = False) -> ToxicityScorer:
        """Detoxify from a local checkpoint + config folder, or by name when cached (or `download`); else the
        fallback, with a note saying why."""
        if not checkpoint and not download and not detoxify_cached(model):
            if not allow_fallback:
                raise OSError(f"Detoxify's {model!r} weights are not on this machine and download=False")
            return cls.fallback(f"Detoxify's {model!r} weights are not on this machine; --detoxify-download fetches "
                                "them once, --detoxify-checkpoint uses a local copy")
        try:
            from detoxify import Detoxify

            if checkpoint:
                detox = Detoxify(checkpoint=checkpoint, huggingface_config_path=config_dir, device="cpu")
                name = f"detoxify:{os.path.basename(checkpoint)}"
            else:
                if os.environ.get("HF_HUB_OFFLINE") == "1":
                    raise OSError("hub offline")
                detox = Detoxify(model, device="cpu")
                name = f"detoxify:{model}"
            return cls(name, lambda texts: detox.predict(texts)["toxicity"])
        except Exception as error:
            if not allow_fallback:
                raise
            return cls.fallback(f"Detoxify unavailable ({type(error).__name__}: {str(error)[:80]})")

    @classmethod
    def fallback(cls, note: str = "") -> ToxicityScorer:
        from profanity_check import predict_prob

        return cls("alt-profanity-check (offline fallback)", lambda texts: list(predict_prob(texts)), note)


def detoxify_cached(model: str = "original") -> bool:
    """Whether Detoxify's `model` checkpoint is already in torch hub's cache (loading it then needs no network)."""
    from urllib.parse import urlparse

    import torch
    from detoxify.detoxify import MODEL_URLS

    url = MODEL_URLS.get(model)
    return url is not None and (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()
