"""Which CLIP scores a model's answers, in a module light enough for the scorer process to read before torch."""

from __future__ import annotations

DEFAULT_CLIP = "ViT-B-32:openai"  # for real checkpoints (needs the hub)


def default_clip_spec(model_spec: str) -> str:
    """The CLIP that scores a model's answers when none is named: the organism's own, else ViT-B-32."""
    return "organism" if model_spec == "organism" else DEFAULT_CLIP
