"""Toxicity scores in [0, 1] per text, from Detoxify or, offline, from a named fallback.

`ToxicityScorer.create()` tries Detoxify (a local checkpoint if given, else the named model, which
needs a download) and falls back to alt-profanity-check only when Detoxify cannot load; the
scorer's `name` always says which one ran, so results never hide a swap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass


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
               allow_fallback: bool = True) -> ToxicityScorer:
        """Detoxify by name (online), or from a local checkpoint + config folder; else the fallback."""
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
