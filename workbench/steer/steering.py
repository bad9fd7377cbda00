"""Steer a VLM's residual stream through nnsight with a registered rule (rules.py): additive, ablation,
adaptive (ASTRA's formula), or any rule added with `register_rule`.

`Steering` says what to apply (a vector, a rule, alpha, layers, at which decoding steps); its `plan()`
is the per-layer arithmetic that both traced `generate` and teacher-forced `steered_logits` (Stage II)
apply, so there is one way to steer. Stage II's trainable twin (`stage2.TrainableSteering`) offers the
same `plan()` with parameters in it.

The unsteered baseline is a plain `generate` with no nnsight trace attached at all.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import torch

from ..core.distributed import SINGLE, Shard
from ..core.models import VLM, Item
from .batching import length_batches, prompt_lengths, resolve_batch_size
from .rules import get_rule
from .vectors import SteeringVector

Mode = str  # the name of a registered steering rule (rules.modes() lists them)
SteerAt = Literal["all", "prompt", "generated", "last"]
STEER_AT: tuple[str, ...] = ("all", "prompt", "generated", "last")
# generate()'s forward calls each choice steers (step 0 is the prefill); `last` steers every call, at its last
# position only: the last prompt token, then each generated token (ASTRA's hook, `h[:, -1, :]`)
_STEPS = {"all": slice(0, None), "prompt": slice(0, 1), "generated": slice(1, None), "last": slice(0, None)}
MAX_ALPHA = 1000.0  # far beyond any useful strength; larger values only produce overflow
MAX_NEW_TOKENS = 1024
RECORDED = "steering"  # a vector's metadata block: the settings it was made (trained) to be applied with
DEFAULT_SETTINGS: dict[str, Any] = {"mode": "adaptive", "alpha": 1.0, "layers": None, "steer_at": "all"}
SUGGESTED = "suggested_layers"  # metadata key: the layers Stage I found to separate (empty: none does)


class Part(NamedTuple):
    """One summand's push at one layer: its direction, benign mean (or None) and effective strength."""

    direction: torch.Tensor
    calibration: torch.Tensor | None
    alpha: float | torch.Tensor


class LayerStep(NamedTuple):
    """What one layer receives: its index and the parts whose changes add (one part unless v + w)."""

    layer: int
    parts: tuple[Part, ...]


class Steerer(Protocol):
    """Anything that steers: `Steering`, or Stage II's trainable twin."""

    @property
    def mode(self) -> str: ...

    @property
    def steer_at(self) -> str: ...

    def plan(self, vlm: VLM) -> list[LayerStep]: ...


_LIST_SEPARATOR = re.compile(r"[,\s]+")  # commas or spaces: "1 2" is two numbers, never 12


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """'1, 2' or '1 2' -> (1, 2); empty -> None (every layer the vector has). Spaces separate: '1 2' once read
    as layer 12."""
    if text is None or not str(text).strip():
        return None
    try:
        return tuple(int(part) for part in _LIST_SEPARATOR.split(str(text).strip()) if part)
    except ValueError:
        raise ValueError(f"layers must be comma-separated whole numbers such as 1,2, got {text!r}") from None


def parse_strengths(text: str) -> list[float]:
    """'-1, 0 2' -> [-1.0, 0.0, 2.0] for the sweep; commas or spaces separate ('0 1' is two strengths, not 1)."""
    try:
        return [float(part) for part in _LIST_SEPARATOR.split(str(text).strip()) if part]
    except ValueError:
        raise ValueError(f"strengths must be comma-separated numbers, got {text!r}") from None


@dataclass(frozen=True)
class Steering:
    """What to apply: a vector, how (rule and alpha), on which layers and at which decoding steps."""

    vector: SteeringVector
    mode: Mode = "adaptive"
    alpha: float = 1.0
    layers: tuple[int, ...] | None = None  # None: every layer the vector has
    steer_at: SteerAt = "all"  # all positions; the prompt (prefill); generated tokens; or the last of each call

    def __post_init__(self) -> None:
        rule = get_rule(self.mode)
        if self.steer_at not in STEER_AT:
            raise ValueError(f"unknown steer_at {self.steer_at!r}; use one of {', '.join(STEER_AT)}")
        if not torch.isfinite(torch.tensor(float(self.alpha))) or abs(self.alpha) > MAX_ALPHA:
            raise ValueError(f"strength alpha must be a number between -{MAX_ALPHA:g} and {MAX_ALPHA:g}, "
                             f"got {self.alpha}")
        if rule.needs_calibration:
            active = self.active_layers
            missing = sorted({layer for part in self.vector.components() for layer in part.directions
                              if layer in active and layer not in part.calibration})
            if missing:
                raise ValueError(f"{self.mode} steering needs calibration means for layer(s) {missing}; "
                                 "recompute the vector with Stage I or use a rule without calibration")

    @property
    def active_layers(self) -> list[int]:
        return self.vector.select(list(self.layers)).layers if self.layers is not None else self.vector.layers

    def plan(self, vlm: VLM) -> list[LayerStep]:
        """Per active layer, in execution order: each summand's (direction, calibration, alpha x its scale),
        on that layer's device."""
        self.vector.check_compatible(vlm)
        parts = self.vector.components()
        steps = []
        for layer in self.active_layers:
            device = next(vlm.layer_module(layer).parameters()).device
            steps.append(LayerStep(layer, tuple(
                Part(part.directions[layer].to(device),
                     None if part.calibration.get(layer) is None else part.calibration[layer].to(device),
                     self.alpha * part.scale(layer))
                for part in parts if layer in part.directions)))
        return steps

    def describe(self) -> dict[str, Any]:
        """The settings that produced a steered figure (recorded next to every number)."""
        return {"mode": self.mode, "alpha": self.alpha, "layers": self.active_layers, "steer_at": self.steer_at}


def steering_for(vector: SteeringVector, mode: str | None = None, alpha: float | None = None,
                 layers: Sequence[int] | None = None, steer_at: str | None = None) -> tuple[Steering, str]:
    """The `Steering` for `vector`: each setting as given, else as recorded in the vector (Stage II records
    what it trained with; layers also fall back to the ones Stage I suggested), else the default; and one line
    saying where each came from."""
    recorded = vector.metadata.get(RECORDED) or {}
    suggested = vector.metadata.get(SUGGESTED)
    if suggested:  # a vector cut down to other layers (`select`) keeps its metadata: only layers it still has
        suggested = [layer for layer in suggested if layer in vector.layers] or None
    given = {"mode": mode, "alpha": alpha, "layers": tuple(layers) if layers else None, "steer_at": steer_at}
    chosen: dict[str, Any] = {}
    origins = []
    for key, value in given.items():
        saved = recorded.get(key)
        if value is not None:
            chosen[key] = value
            differs = saved is not None and _same(saved) != _same(value)
            note = f"; the vector was made for {_show(saved)}" if differs else ""
            origins.append(f"{key} {_show(value)} (given{note})")
        elif saved is not None:
            chosen[key] = saved
            origins.append(f"{key} {_show(saved)} (from the vector)")
        elif key == "layers" and suggested:
            chosen[key] = tuple(suggested)
            origins.append(f"layers {_show(chosen[key])} (suggested by Stage I)")
        else:
            chosen[key] = DEFAULT_SETTINGS[key]
            why = "; Stage I found no layer that separates" if key == "layers" and suggested == [] else ""
            origins.append(f"{key} {_show(chosen[key])} (default{why})")
    steering = Steering(vector, chosen["mode"], float(chosen["alpha"]),
                        tuple(chosen["layers"]) if chosen["layers"] else None, chosen["steer_at"])
    return steering, "steering: " + ", ".join(origins)


def _same(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    if value is None:
        return "all"
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" if isinstance(
        value, float) else str(value)


def steer_hidden(hidden: torch.Tensor, direction: torch.Tensor, mode: Mode, alpha: float | torch.Tensor,
                 calibration: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one registered rule to hidden states [..., H]; differentiable in `direction` and `alpha`."""
    rule = get_rule(mode)
    direction = direction.to(hidden.device, torch.float32)
    unit = direction / direction.norm().clamp_min(1e-12)
    mean = None if calibration is None else calibration.to(hidden.device, torch.float32)
    steered = rule.apply(hidden.float(), unit, direction, alpha, mean)
    return steered.to(hidden.dtype)  # a float32 vector added to a bf16 residual would break the next layer


def steer_layer(hidden: torch.Tensor, parts: Sequence[Part], mode: Mode) -> torch.Tensor:
    """One layer's steering: every part's change is computed on the same hidden state and the changes add
    (how `v + w` is defined); a single part is exactly `steer_hidden`."""
    if len(parts) == 1:
        return steer_hidden(hidden, parts[0].direction, mode, parts[0].alpha, parts[0].calibration)
    base = hidden.float()
    total = base.clone()
    for part in parts:
        total = total + (steer_hidden(base, part.direction, mode, part.alpha, part.calibration) - base)
    return total.to(hidden.dtype)


def _generate_ids(vlm: VLM, encoding: dict[str, torch.Tensor], steering: Steerer | None,
                  generation: dict[str, Any]) -> torch.Tensor:
    """Token ids (prompt included) from plain generate, or from generate traced with the steering hooks."""
    if steering is None:
        return vlm.hf_model.generate(**encoding, **generation)
    plan = steering.plan(vlm)
    steps = _STEPS[steering.steer_at]
    last_only = steering.steer_at == "last"
    mode = steering.mode
    produced: dict[str, torch.Tensor] = {}

    def run(**kwargs: Any) -> torch.Tensor:
        produced["ids"] = vlm.hf_model.generate(**kwargs)
        return produced["ids"]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was never reached.*")  # loop ends when generation does
        with vlm.nn.trace(**encoding, fn=run, **generation) as tracer:
            for _ in tracer.iter[steps]:
                for step in plan:
                    layer = vlm.layers[step.layer]
                    if last_only:  # left padding: position -1 is every row's last real token
                        hidden = layer.output
                        layer.output = torch.cat([hidden[:, :-1], steer_layer(hidden[:, -1:], step.parts, mode)], 1)
                    else:
                        layer.output = steer_layer(layer.output, step.parts, mode)
    return produced["ids"]


def generate_ids(vlm: VLM, items: Sequence[Item], steering: Steerer | None = None, max_new_tokens: int = 32,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 batch_size: int | str | None = 8, suppress_tokens: Sequence[int] = (), system: str | None = None,
                 on_batch: Callable[[list[int], list[list[int]]], None] | None = None, shard: Shard = SINGLE
                 ) -> list[list[int]]:
    """Generated token ids per (image, prompt) pair (no prompt, cut after the first EOS), in order; `system`
    is a system prompt put before each (a non-steering baseline defence). Batches hold one modality and
    prompts of similar length (`batching.py`; `batch_size` "auto" or None sizes them to the device);
    `on_batch(indices, ids)` hears each batch as it finishes (eval streams them to disk).
    Seeded per batch, so the same call gives the same samples. `suppress_tokens` are never sampled
    (Stage II suppresses the image placeholder, which would break teacher forcing). Under torchrun (`shard`)
    batch j runs on rank j % world, built and seeded as in one process, so the samples are the same; every
    rank returns them all."""
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}")
    batch_size = resolve_batch_size(vlm, batch_size, max_new_tokens)
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
    batches = length_batches([image is not None for image, _ in items], prompt_lengths(vlm, [p for _, p in items]),
                             batch_size)
    mine: list[int] = []
    for number, indices in enumerate(batches):
        if not shard.owns(number):
            continue
        mine += indices
        encoding = vlm.encode([items[i] for i in indices], system)
        with vlm.lock, torch.no_grad():
            torch.manual_seed(seed)
            ids = _generate_ids(vlm, encoding, steering, generation)
        for index, row in zip(indices, ids[:, encoding["input_ids"].shape[1]:].tolist()):
            cut = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
            outputs[index] = row[:cut]
        if on_batch is not None:
            on_batch(indices, [outputs[i] for i in indices])
    if shard.world > 1:
        for part in shard.gather({i: outputs[i] for i in mine}):
            for index, row in part.items():
                outputs[index] = row
    return outputs


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def generate(vlm: VLM, items: Sequence[Item], steering: Steering | None = None, max_new_tokens: int = 32,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             batch_size: int | str | None = 8, system: str | None = None) -> list[str]:
    """Generated continuations for (image, prompt) pairs, in order; seeded so runs are repeatable."""
    ids = generate_ids(vlm, items, steering, max_new_tokens, do_sample, temperature, top_p, seed, batch_size,
                       system=system)
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


def steered_positions(steer_at: str, response_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions of a packed (prompt, response) batch that generation with `steer_at` steered.
    With the KV cache, steering a token during generation equals steering its position in one teacher-forced pass,
    so these masks make teacher forcing reproduce steered generation exactly: `prompt` = the prompt's positions,
    `generated` = the response tokens, `last` = the last prompt token and the response tokens."""
    if steer_at not in STEER_AT:
        raise ValueError(f"unknown steer_at {steer_at!r}; use one of {', '.join(STEER_AT)}")
    response = response_mask.bool()
    if steer_at == "all":
        return torch.ones_like(response)
    if steer_at == "generated":
        return response
    first = torch.where(response.any(1), response.int().argmax(1), torch.full_like(response[:, 0], response.shape[1],
                                                                                     dtype=torch.long))
    positions = torch.arange(response.shape[1], device=response.device)[None, :]
    if steer_at == "prompt":
        return positions < first[:, None]
    return positions >= (first - 1)[:, None]


def steered_logits(vlm: VLM, encoding: dict[str, torch.Tensor], steering: Steerer,
                   positions: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced logits [B, T, V] with steering on `positions` ([B, T] bool, `steered_positions`; None: every
    position, which only `steer_at="all"` means); differentiable in the steering's tensors, for Stage II, where
    generate's no_grad would cut the graph."""
    if positions is None and steering.steer_at != "all":
        raise ValueError(f"teacher-forced scoring under steer_at={steering.steer_at!r} needs the response positions "
                         "(`steered_positions`)")
    plan = steering.plan(vlm)
    mode = steering.mode
    where = None if positions is None else positions.to(vlm.input_device)[:, :, None]
    with vlm.lock:
        with vlm.nn.trace(**encoding):
            for step in plan:
                layer = vlm.layers[step.layer]
                if where is None:
                    layer.output = steer_layer(layer.output, step.parts, mode)
                else:
                    hidden = layer.output
                    layer.output = torch.where(where.to(hidden.device), steer_layer(hidden, step.parts, mode), hidden)
            logits = vlm.nn.output.logits.save()
    return logits
