"""Visual consistency: open_clip cosine similarity between an image and a text.

`load_clip("organism")` loads the organism's CLIP from assets/ (open_clip `local-dir:`);
`load_clip("ViT-B-32:openai")` loads a named open_clip model with pretrained weights (online).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

DEFAULT_CLIP = "ViT-B-32:openai"  # for real checkpoints (needs the hub)
ORGANISM_CLIP = Path(__file__).resolve().parents[2] / "assets" / "organism" / "clip"


NO_CLIP = ""  # a tiny random model: its answers are noise, so no CLIP is loaded (nor fetched) for them


def default_clip_spec(model_spec: str) -> str:
    """The CLIP that scores a model's answers when none is named: the organism's own, none for a tiny random model
    (nothing to measure, and ViT-B-32 would be fetched from the hub), else ViT-B-32."""
    if model_spec == "organism":
        return "organism"
    return NO_CLIP if model_spec.startswith("tiny-random:") else DEFAULT_CLIP


@dataclass
class ClipScorer:
    name: str
    model: Any
    preprocess: Any
    tokenizer: Any

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """Cosine similarity per (image, text) pair, in [-1, 1]."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return []
        pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images])
        image_features = self.model.encode_image(pixels, normalize=True)
        text_features = self.model.encode_text(self.tokenizer([t or "." for t in texts]), normalize=True)
        return (image_features * text_features).sum(-1).tolist()


def load_clip(spec: str = "organism") -> ClipScorer:
    import open_clip

    if "/" in spec and not Path(spec).is_dir():
        raise FileNotFoundError(f"CLIP folder {spec} does not exist (give 'organism', a folder with "
                                "open_clip_config.json, or ARCH:PRETRAINED such as ViT-B-32:openai)")
    if spec == "organism" or Path(spec).is_dir():
        folder = ORGANISM_CLIP if spec == "organism" else Path(spec)
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"no open_clip model in {folder} (expected open_clip_config.json)")
        name = f"local-dir:{folder}"
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        tokenizer = open_clip.get_tokenizer(name)
    else:
        arch, _, pretrained = spec.partition(":")
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        tokenizer = open_clip.get_tokenizer(arch)
    return ClipScorer(spec, model.eval(), preprocess, tokenizer)
