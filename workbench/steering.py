"""Steer a VLM's residual stream through nnsight: additive, ablation or adaptive (ASTRA) steering.

Directions point from benign to harmful. `additive` adds alpha * v̂ (a negative alpha defends);
`ablation` removes alpha times the projection on v̂ (alpha = 1 removes it fully); `adaptive`
subtracts alpha * c * ‖h‖ * v̂ with c = clamp(cos(h - h̄, v), 0, 1), so it only pushes activations
that lean harmful relative to the benign mean h̄ (a positive alpha defends).

The unsteered baseline is a plain `generate` with no nnsight trace attached at all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from .models import VLM, Item
from .vectors import SteeringVector

Mode = Literal["additive", "ablation", "adaptive"]
MODES: tuple[str, ...] = ("additive", "ablation", "adaptive")
Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")
_STEPS = {"all": slice(0, None), "prompt": slice(0, 1), "generated": slice(1, None)}  # generate() forward calls
MAX_ALPHA = 1000.0  # far beyond any useful strength; larger values only produce overflow
MAX_NEW_TOKENS = 1024
DEFENCE_SIGN = {"additive": "negative alpha defends", "ablation": "alpha=1 removes the direction",
                "adaptive": "positive alpha defends"}


@dataclass(frozen=True)
class Steering:
    """What to apply: a vector, how (mode, alpha), on which layers and at which positions."""

    vector: SteeringVector
    mode: Mode = "adaptive"
    alpha: float = 1.0
    layers: tuple[int, ...] | None = None  # None: every layer the vector has
    positions: Positions = "all"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; use one of {', '.join(POSITIONS)}")
        if not torch.isfinite(torch.tensor(float(self.alpha))) or abs(self.alpha) > MAX_ALPHA:
            raise ValueError(f"strength alpha must be a number between -{MAX_ALPHA:g} and {MAX_ALPHA:g}, got {self.alpha}")
        if self.mode == "adaptive":
            missing = [layer for layer in self.active_layers if layer not in self.vector.calibration]
            if missing:
                raise ValueError(f"adaptive steering needs calibration means for layer(s) {missing}; "
                                 "recompute the vector with Stage I or use additive/ablation")

    @property
    def active_layers(self) -> list[int]:
        return self.vector.select(list(self.layers)).layers if self.layers is not None else self.vector.layers


def steer_hidden(hidden: torch.Tensor, direction: torch.Tensor, mode: Mode, alpha: float | torch.Tensor,
                 calibration: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one steering step to hidden states [..., H]; differentiable in `direction` and `alpha`."""
    direction = direction.to(hidden.device, torch.float32)
    unit = direction / direction.norm().clamp_min(1e-12)
    h = hidden.float()
    if mode == "additive":
        steered = h + alpha * unit
    elif mode == "ablation":
        steered = h - alpha * (h @ unit).unsqueeze(-1) * unit
    elif mode == "adaptive":
        if calibration is None:
            raise ValueError("adaptive steering needs the benign mean (calibration)")
        centred = h - calibration.to(hidden.device, torch.float32)
        lean = torch.nn.functional.cosine_similarity(centred, direction.expand_as(centred), dim=-1)
        strength = lean.clamp(0.0, 1.0) * h.norm(dim=-1)
        steered = h - alpha * strength.unsqueeze(-1) * unit
    else:
        raise ValueError(f"unknown steering mode {mode!r}")
    return steered.to(hidden.dtype)  # a float32 vector added to a bf16 residual would break the next layer


def _plan(vlm: VLM, steering: Steering) -> list[tuple[int, torch.Tensor, torch.Tensor | None, float]]:
    """(layer index, direction, calibration, alpha) per active layer, on that layer's device."""
    steering.vector.check_compatible(vlm)
    plan = []
    for layer in steering.active_layers:
        device = next(vlm.layer_module(layer).parameters()).device
        calibration = steering.vector.calibration.get(layer)
        plan.append((layer, steering.vector.directions[layer].to(device),
                     None if calibration is None else calibration.to(device),
                     steering.alpha * steering.vector.scale(layer)))
    return plan


def _generate_ids(vlm: VLM, encoding: dict[str, torch.Tensor], steering: Steering | None,
                  generation: dict[str, Any]) -> torch.Tensor:
    """Token ids (prompt included) from plain generate, or from generate traced with the steering hooks."""
    if steering is None:
        return vlm.hf_model.generate(**encoding, **generation)
    plan = _plan(vlm, steering)
    steps = _STEPS[steering.positions]
    mode = steering.mode
    produced: dict[str, torch.Tensor] = {}

    def run(**kwargs: Any) -> torch.Tensor:
        produced["ids"] = vlm.hf_model.generate(**kwargs)
        return produced["ids"]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was never reached.*")  # loop ends when generation does
        with vlm.nn.trace(**encoding, fn=run, **generation) as tracer:
            for _ in tracer.iter[steps]:
                for index, direction, calibration, alpha in plan:
                    layer = vlm.layers[index]
                    layer.output = steer_hidden(layer.output, direction, mode, alpha, calibration)
    return produced["ids"]


def generate_ids(vlm: VLM, items: Sequence[Item], steering: Steering | None = None, max_new_tokens: int = 32,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 batch_size: int = 8, suppress_tokens: Sequence[int] = ()) -> list[list[int]]:
    """Generated token ids per (image, prompt) pair (no prompt, cut after the first EOS), in order.
    Seeded per batch, so the same call gives the same samples. `suppress_tokens` are never sampled
    (Stage II suppresses the image placeholder, which would break teacher forcing)."""
    from .models import batches_by_modality

    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    tokenizer = vlm.tokenizer
    generation: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=tokenizer.pad_token_id)
    if suppress_tokens:
        generation["suppress_tokens"] = list(suppress_tokens)
    if do_sample:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive when sampling, got {temperature}")
        generation.update(temperature=temperature, top_p=top_p)
    eos = {tokenizer.eos_token_id} | set(_as_list(getattr(vlm.hf_model.generation_config, "eos_token_id", None)))
    outputs: list[list[int]] = [[] for _ in items]
    for indices in batches_by_modality(items, batch_size):
        encoding = vlm.encode([items[i] for i in indices])
        with vlm.lock, torch.no_grad():
            torch.manual_seed(seed)
            ids = _generate_ids(vlm, encoding, steering, generation)
        for index, row in zip(indices, ids[:, encoding["input_ids"].shape[1]:].tolist()):
            cut = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
            outputs[index] = row[:cut]
    return outputs


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def generate(vlm: VLM, items: Sequence[Item], steering: Steering | None = None, max_new_tokens: int = 32,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             batch_size: int = 8) -> list[str]:
    """Generated continuations for (image, prompt) pairs, in order; seeded so runs are repeatable."""
    ids = generate_ids(vlm, items, steering, max_new_tokens, do_sample, temperature, top_p, seed, batch_size)
    return vlm.decode(ids)


@dataclass
class Comparison:
    """The same input generated without and with steering, under identical decoding settings and seed."""

    prompt: str
    unsteered: str
    steered: str

    @property
    def changed(self) -> bool:
        return self.unsteered != self.steered


def compare(vlm: VLM, items: Sequence[Item], steering: Steering, **decoding: Any) -> list[Comparison]:
    """Unsteered (no intervention attached) and steered generations side by side."""
    plain = generate(vlm, items, None, **decoding)
    steered = generate(vlm, items, steering, **decoding)
    return [Comparison(prompt, a, b) for (_, prompt), a, b in zip(items, plain, steered)]


def steered_logits(vlm: VLM, encoding: dict[str, torch.Tensor], directions: dict[int, torch.Tensor],
                   mode: Mode = "additive", alpha: float | torch.Tensor | dict[int, Any] = 1.0,
                   calibration: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Teacher-forced logits [B, T, V] with steering on every position; differentiable in `directions`
    and `alpha` (one value, or one per layer), for Stage II, where generate's no_grad would cut the graph."""
    calibration = calibration or {}
    alphas = alpha if isinstance(alpha, dict) else {index: alpha for index in directions}
    with vlm.lock:
        with vlm.nn.trace(**encoding):
            for index in sorted(directions):
                layer = vlm.layers[index]
                layer.output = steer_hidden(layer.output, directions[index], mode, alphas[index],
                                            calibration.get(index))
            logits = vlm.nn.output.logits.save()
    return logits
