"""Visual adversarial images by projected gradient descent (Qi et al. 2023), the model frozen.

The image is optimised in pixel space at the processor's own input size, so the processor's resizing is the identity
and its normalisation ((x - mean) / std) is applied here, differentiably; `check_processor` refuses processors whose
output this cannot reproduce (tiling, dynamic resolution). The objective is the mean log-likelihood per token of
target continuations (a toxic corpus, affirmative prefixes, a user file) after each prompt: universal mode fits one
image to every (prompt, target) pair, per-prompt mode one image per prompt. Each step moves the image by `step_size`
against the sign of the loss gradient and projects it back into the L∞ ball of radius `epsilon` around the clean
image (None: unconstrained, only [0, 1]). The result is quantised to 8-bit PNG levels inside the ball, so the saved
file is exactly the image that was measured. With a steering, the attack runs through the steered model (an adaptive
attacker who knows the defence).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.models import VLM
from ..core.progress import Cancelled
from ..steer.steering import Steerer, steered_logits, steered_positions
from ..steer.teacher_forcing import pack_responses

LEVELS = 255  # 8-bit PNG


@dataclass(frozen=True)
class PGDSettings:
    """What an attack is made with (saved as attack.json beside the images)."""

    epsilon: float | None = 32 / 255  # L∞ radius in [0, 1] pixel units; None: unconstrained
    step_size: float = 1 / 255
    steps: int = 200
    random_start: bool = True
    seed: int = 0
    batch: int = 8  # (prompt, target) pairs per gradient step
    keep: str = "best"  # best: the iterate with the lowest running loss (EMA 0.9 of the step losses); last: Qi et al.'s

    def __post_init__(self) -> None:
        problems = []
        if self.epsilon is not None and not 0 < self.epsilon <= 1:
            problems.append(f"epsilon must be in (0, 1] (pixel units; 32/255 is Qi et al.'s middle budget), got "
                            f"{self.epsilon}")
        if not 0 < self.step_size <= 1:
            problems.append(f"step size must be in (0, 1], got {self.step_size}")
        if self.steps < 1:
            problems.append(f"steps must be at least 1, got {self.steps}")
        if self.batch < 1:
            problems.append(f"batch must be at least 1, got {self.batch}")
        if self.keep not in ("best", "last"):
            problems.append(f"keep must be best or last, got {self.keep!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def epsilon_levels(self) -> int | None:
        """The budget in 8-bit levels (32/255 -> 32)."""
        return None if self.epsilon is None else int(math.floor(self.epsilon * LEVELS + 1e-6))

    def describe(self) -> dict:
        return asdict(self)


def parse_epsilon(text: str) -> float | None:
    """'32/255', '0.125' or 'none'/'unconstrained' -> pixel units (None: unconstrained)."""
    cleaned = text.strip().lower()
    if cleaned in ("none", "unconstrained", "inf"):
        return None
    try:
        if "/" in cleaned:
            top, bottom = cleaned.split("/", 1)
            return float(top) / float(bottom)
        return float(cleaned)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"epsilon takes a fraction such as 32/255, a number such as 0.125, or 'unconstrained'; "
                         f"got {text!r}") from None


def input_size(vlm: VLM) -> tuple[int, int]:
    """(width, height) the processor feeds the vision tower, or a clear refusal."""
    processor = getattr(vlm.processor, "image_processor", None)
    for attribute in ("crop_size", "size"):
        size = getattr(processor, attribute, None)
        fields = size if isinstance(size, dict) else vars(size) if size is not None else {}
        if fields.get("height") and fields.get("width"):
            return int(fields["width"]), int(fields["height"])
    raise ValueError(f"PGD needs a processor with a fixed input size; {vlm.spec}'s resizes or tiles dynamically "
                     "(not supported yet)")


def _normaliser(vlm: VLM) -> Callable[[torch.Tensor], torch.Tensor]:
    processor = vlm.processor.image_processor
    mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    return lambda pixels: (pixels - mean.to(pixels.device)) / std.to(pixels.device)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """[1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / LEVELS).permute(2, 0, 1)[None]


def to_image(pixels: torch.Tensor) -> Image.Image:
    array = (pixels[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * LEVELS).round().astype(np.uint8)
    return Image.fromarray(array)


def check_processor(vlm: VLM, image: Image.Image) -> None:
    """The processor's own pixel_values for `image` (already at the input size) equal ours: what PGD optimises is
    what the model will see when the saved PNG is loaded again."""
    theirs = vlm.encode([(image, "x")])["pixel_values"].float().cpu()
    ours = _normaliser(vlm)(to_tensor(image))
    if theirs.shape != ours.shape or float((theirs - ours).abs().max()) > 1e-3:
        raise ValueError(f"PGD cannot follow {vlm.spec}'s image processor (it tiles, crops or resizes the image in a "
                         f"way not reproduced here: pixel_values {tuple(theirs.shape)}); not supported yet")


def prepare_image(vlm: VLM, image: Image.Image) -> Image.Image:
    """The clean image at the processor's input size (so its resizing is the identity)."""
    size = input_size(vlm)
    return image.convert("RGB") if image.size == size else image.convert("RGB").resize(size, Image.Resampling.BICUBIC)


@dataclass
class PGDResult:
    images: list[Image.Image]  # one (universal) or one per prompt
    losses: list[float]  # mean target NLL per token, per step (universal: over all pairs; per-prompt: mean of images)
    final_loss: float  # measured on the quantised (saved) image(s)
    clean_loss: float  # the clean image's
    settings: dict


def target_loss(vlm: VLM, pixels: torch.Tensor, prompts: Sequence[str], targets: Sequence[list[int]],
                clean: Image.Image, steering: Steerer | None = None) -> torch.Tensor:
    """Mean negative log-likelihood per target token of each (prompt, target) pair with the image `pixels`."""
    packed, is_target = pack_responses(vlm, [(clean, p) for p in prompts], list(targets))
    packed["pixel_values"] = _normaliser(vlm)(pixels).to(packed["pixel_values"].dtype).expand(
        len(prompts), *packed["pixel_values"].shape[1:]).to(packed["pixel_values"].device)
    if steering is None:
        with vlm.lock:
            logits = vlm.hf_model(**packed).logits
    else:
        logits = steered_logits(vlm, packed, steering, steered_positions(steering.steer_at, is_target))
    labels = packed["input_ids"][:, 1:]
    mask = is_target[:, 1:].to(logits.device).float()
    token_logp = torch.gather(F.log_softmax(logits[:, :-1].float(), -1), 2, labels.unsqueeze(-1)).squeeze(-1)
    return -((token_logp * mask).sum(1) / mask.sum(1).clamp_min(1)).mean()


def _pairs(prompts: Sequence[str], targets: Sequence[list[int]]) -> list[tuple[str, list[int]]]:
    return [(p, t) for p in prompts for t in targets]


def _mean_loss(vlm: VLM, pixels: torch.Tensor, pairs: Sequence[tuple[str, list[int]]], clean: Image.Image,
               steering: Steerer | None, batch: int) -> float:
    with torch.no_grad():
        total = sum(float(target_loss(vlm, pixels, [p for p, _ in chunk], [t for _, t in chunk], clean, steering))
                    * len(chunk) for chunk in (pairs[i:i + batch] for i in range(0, len(pairs), batch)))
    return total / len(pairs)


def _optimise(vlm: VLM, clean: Image.Image, pairs: list[tuple[str, list[int]]], settings: PGDSettings,
              steering: Steerer | None, on_step: Callable[[int, float], None], cancel: threading.Event | None
              ) -> tuple[torch.Tensor, list[float]]:
    base = to_tensor(clean).to(vlm.input_device)
    generator = torch.Generator().manual_seed(settings.seed)
    eps = settings.epsilon
    pixels = base.clone()
    if settings.random_start and eps is not None:
        pixels = (base + (torch.rand(base.shape, generator=generator) * 2 - 1).to(base.device) * eps).clamp(0, 1)
    order = random_order(len(pairs), settings.steps * settings.batch, settings.seed)
    losses: list[float] = []
    running, best, kept = math.inf, math.inf, pixels.detach().clone()
    warm_up = min(settings.steps - 1, math.ceil(len(pairs) / settings.batch))  # one pass over the pairs first
    for step in range(settings.steps):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"PGD cancelled at step {step}")
        chosen = [pairs[i] for i in order[step * settings.batch:(step + 1) * settings.batch]]
        current = pixels.detach()
        pixels = current.clone().requires_grad_(True)
        loss = target_loss(vlm, pixels, [p for p, _ in chosen], [t for _, t in chosen], clean, steering)
        (gradient,) = torch.autograd.grad(loss, pixels)
        losses.append(float(loss.detach()))
        running = losses[-1] if step == 0 else 0.9 * running + 0.1 * losses[-1]
        if settings.keep == "best" and step >= warm_up and running < best:
            best, kept = running, current  # the image these losses were measured on
        with torch.no_grad():
            pixels = current - settings.step_size * gradient.sign()
            if eps is not None:
                pixels = torch.max(torch.min(pixels, base + eps), base - eps)
            pixels = pixels.clamp(0, 1)
        on_step(step + 1, losses[-1])
    if settings.keep == "last":
        kept = pixels
    return quantise(kept, base, settings.epsilon_levels), losses


def random_order(count: int, needed: int, seed: int) -> list[int]:
    """Indices of `count` pairs, reshuffled each pass, `needed` long (seeded)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < needed:
        order += rng.permutation(count).tolist()
    return order[:needed]


def quantise(pixels: torch.Tensor, base: torch.Tensor, levels: int | None) -> torch.Tensor:
    """8-bit levels, inside the ε ball measured in levels (so the PNG respects ε exactly)."""
    q = (pixels.detach() * LEVELS).round()
    if levels is not None:
        b = (base * LEVELS).round()
        q = torch.max(torch.min(q, b + levels), b - levels)
    return q.clamp(0, LEVELS) / LEVELS


def pgd_attack(vlm: VLM, image: Image.Image, prompts: Sequence[str], targets: Sequence[str], settings: PGDSettings,
               universal: bool = True, steering: Steerer | None = None,
               progress: Callable[[int, int, str], None] | None = None, cancel: threading.Event | None = None
               ) -> PGDResult:
    """Adversarial image(s) for `prompts` toward `targets` (the model frozen; gradients through the vision tower)."""
    if not prompts:
        raise ValueError("PGD needs at least one prompt")
    if not targets or not all(t.strip() for t in targets):
        raise ValueError("PGD needs at least one non-empty target string")
    clean = prepare_image(vlm, image)
    check_processor(vlm, clean)
    target_ids = [vlm.token_ids(t) for t in targets]
    groups = [list(prompts)] if universal else [[p] for p in prompts]
    total = settings.steps * len(groups)
    images, curves, finals, cleans = [], [], [], []
    for number, group in enumerate(groups):
        pairs = _pairs(group, target_ids)

        def on_step(step: int, loss: float, done: int = number * settings.steps) -> None:
            if progress is not None:
                progress(done + step, total, f"PGD step {done + step}/{total} · loss {loss:.3f}")

        pixels, losses = _optimise(vlm, clean, pairs, settings, steering, on_step, cancel)
        saved = to_image(pixels)
        images.append(saved)
        curves.append(losses)
        finals.append(_mean_loss(vlm, to_tensor(saved).to(vlm.input_device), pairs, clean, steering, settings.batch))
        cleans.append(_mean_loss(vlm, to_tensor(clean).to(vlm.input_device), pairs, clean, steering, settings.batch))
    losses = [float(np.mean(column)) for column in zip(*curves)]
    return PGDResult(images, losses, float(np.mean(finals)), float(np.mean(cleans)),
                     {**settings.describe(), "universal": universal, "targets": list(targets), "prompts": len(prompts),
                      "input_size": list(clean.size), "steered": steering is not None})
