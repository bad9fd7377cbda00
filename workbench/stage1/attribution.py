"""ASTRA's image attribution (ASTRAL-Group/ASTRA `image_attr/`, `extract_attr/`, `extract_act/`): which patches of a
harmful image drive the model's compliant answer, and the direction they make.

Per harmful (image, prompt): the image is cut into a grid of patches; `ablations` random masks keep each patch with
probability `keep_prob` (the rest painted black, as ASTRA's partitioner does); the target answer's log-odds under each
masked image is regressed on the masks with a Lasso (ASTRA's solver: standardised masks, alpha 0.01); the `top_k`
patches with positive weight above 1e-4 are the attributed ones. The direction sample is h(image) - h(image with the
attributed patches black), read at the last token of the image alone with an empty prompt (ASTRA's extract_act);
the source's direction is the mean of the samples.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from ..core.models import VLM
from ..core.progress import ProgressFn, track
from ..core.records import Record
from ..steer.steering import generate_ids
from ..steer.teacher_forcing import response_logprobs
from .activations import capture_batch, position_weights


@dataclass(frozen=True)
class AttributionSettings:
    """ASTRA's defaults (extract_llava_jb_attr.py) except the grid, which is the organism's patch grid."""

    grid: int = 8  # patches per side (ASTRA: 336 px / 24 px = 14 on LLaVA-1.5)
    ablations: int = 64
    keep_prob: float = 0.5
    top_k: int = 15
    min_score: float = 1e-4
    lasso_alpha: float = 0.01
    target: str | None = None  # a fixed compliant answer (ASTRA's jailbreak scripts: "Sure,"); None: the model's own
    target_tokens: int = 8  # with target None: the first tokens of the model's own greedy answer
    max_records: int = 48  # harmful image records used per source (ASTRA: 16 images x 3 prompts)

    def describe(self) -> dict:
        return asdict(self)


def patch_boxes(size: tuple[int, int], grid: int) -> list[tuple[int, int, int, int]]:
    """The grid's cells (x0, y0, x1, y1), row by row, covering the whole image."""
    width, height = size
    xs = [round(i * width / grid) for i in range(grid + 1)]
    ys = [round(i * height / grid) for i in range(grid + 1)]
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(grid) for c in range(grid)]


def masked_image(image: Image.Image, grid: int, keep: Sequence[bool]) -> Image.Image:
    """`image` with every patch not kept painted black."""
    out = image.convert("RGB").copy()
    for box, kept in zip(patch_boxes(out.size, grid), keep):
        if not kept:
            out.paste((0, 0, 0), box)
    return out


def ablation_masks(count: int, sources: int, keep_prob: float) -> np.ndarray:
    """[count, sources] bool: mask i kept each patch with probability keep_prob, seeded i (ASTRA's _create_mask)."""
    return np.stack([np.random.RandomState(i).choice([False, True], size=sources, p=[1 - keep_prob, keep_prob])
                     for i in range(count)])


def lasso_weights(masks: np.ndarray, outputs: np.ndarray, tokens: int, alpha: float) -> np.ndarray:
    """Per-patch weights of the sparse linear fit outputs ~ masks (ASTRA's LassoRegression, rescaled back)."""
    from sklearn.linear_model import Lasso
    from sklearn.preprocessing import StandardScaler

    x = masks.astype(np.float32)
    scaler = StandardScaler().fit(x)
    lasso = Lasso(alpha=alpha, random_state=0, fit_intercept=True).fit(scaler.transform(x), outputs / tokens)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return lasso.coef_ / scale * tokens


def log_odds(total_logprob: torch.Tensor) -> np.ndarray:
    """log p - log(1 - p) of whole answers from their summed log-probs (ASTRA's aggregate_logit_probs)."""
    logp = total_logprob.double().clamp(max=-1e-12)
    return (logp - torch.log(-torch.expm1(logp))).numpy()


def attribute_with(answer_logprob: Callable[[list[Image.Image]], torch.Tensor], image: Image.Image, tokens: int,
                   settings: AttributionSettings) -> tuple[np.ndarray, list[int]]:
    """(per-patch weights, the attributed patches) given `answer_logprob(images)`: the target answer's summed
    log-prob under each masked image (`tokens` long)."""
    masks = ablation_masks(settings.ablations, settings.grid * settings.grid, settings.keep_prob)
    totals = answer_logprob([masked_image(image, settings.grid, mask) for mask in masks])
    weights = lasso_weights(masks, log_odds(totals.detach().cpu()), tokens, settings.lasso_alpha)
    ranked = np.argsort(-weights)[:settings.top_k]
    return weights, sorted(int(i) for i in ranked if weights[i] > settings.min_score)


def attribute(vlm: VLM, image: Image.Image, prompt: str, target_ids: list[int], settings: AttributionSettings
              ) -> tuple[np.ndarray, list[int]]:
    """(per-patch weights, the attributed patches) for the target answer to (image, prompt) under `vlm`."""
    def answer_logprob(images: list[Image.Image]) -> torch.Tensor:
        with torch.no_grad():
            return response_logprobs(vlm, [(picture, prompt) for picture in images], [target_ids] * len(images))[0]

    return attribute_with(answer_logprob, image, len(target_ids), settings)


def attribution_direction(vlm: VLM, records: Sequence[Record], settings: AttributionSettings,
                          progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                          show_bar: bool = True) -> tuple[torch.Tensor | None, dict]:
    """[layers, H] mean of h(image) - h(image, attributed patches black) over harmful image `records` (None when no
    record has an attributed patch), and what was found (records used, patches per record)."""
    harmful = [r for r in records if r.label == "harmful" and r.has_image][:settings.max_records]
    if settings.target is not None:
        fixed = vlm.token_ids(settings.target)
        targets = [list(fixed) for _ in harmful]
    else:
        answers = generate_ids(vlm, [r.item for r in harmful], None, max_new_tokens=settings.target_tokens)
        targets = [a or [vlm.tokenizer.eos_token_id] for a in answers]
    samples, found = [], []
    for record, target in track(list(zip(harmful, targets)), len(harmful), "attributing image patches", progress,
                                cancel, show_bar):
        image = record.load_image()
        assert image is not None  # harmful image records only
        _, patches = attribute(vlm, image, record.prompt, target, settings)
        found.append(len(patches))
        if not patches:
            continue
        keep = [i not in patches for i in range(settings.grid * settings.grid)]
        encoding = vlm.encode([(image, ""), (masked_image(image, settings.grid, keep), "")])
        hidden = capture_batch(vlm, encoding, position_weights(vlm, encoding, "last"))
        samples.append(hidden[0] - hidden[1])
    report = {"records": len(harmful), "with_patches": len(samples), "patches_per_record": found,
              "settings": settings.describe()}
    return (torch.stack(samples).mean(0) if samples else None), report
