"""Steering rules: how one layer's hidden states move along a direction. One function + one registration each.

Every rule takes (hidden [..., H] float32, unit direction [H], raw direction [H], alpha, benign mean [H]
or None) and returns the steered hidden states; it must be differentiable in the direction and alpha
(Stage II trains through it). `steer_hidden` in steering.py is the single entry point that looks the
rule up, so generation, teacher-forced Stage II and every shell apply the same arithmetic.

Directions point from benign to harmful:
- `additive` adds alpha * v̂ (a negative alpha defends);
- `ablation` removes alpha times the projection on v̂ (alpha = 1 removes it fully);
- `adaptive` (ASTRA's formula) subtracts alpha * c * ‖h‖ * v̂ with c = clamp(cos(h - h̄, v), 0, 1), so only
  activations that lean harmful relative to the benign mean h̄ move (a positive alpha defends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

RuleFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "float | torch.Tensor", "torch.Tensor | None"],
                  torch.Tensor]


@dataclass(frozen=True)
class SteeringRule:
    """A named rule, whether it needs the benign mean h̄, and which sign of alpha defends (shown to users)."""

    name: str
    apply: RuleFn
    needs_calibration: bool
    defence_sign: str
    toward_harm: Callable[[float], bool] | None = None  # which strengths push toward harm (None: not stated)
    odd: bool = True  # the effect flips with the direction's sign (additive, adaptive); ablation's does not


RULES: dict[str, SteeringRule] = {}


def register_rule(name: str, apply: RuleFn, needs_calibration: bool, defence_sign: str,
                  toward_harm: Callable[[float], bool] | None = None, odd: bool = True) -> SteeringRule:
    """Add a steering rule; it then appears in every mode choice (CLI, app) and in `Steering(mode=name)`.
    `toward_harm(alpha)` says which strengths amplify the harmful direction (a hosted app refuses those) for a
    direction pointing benign -> harmful; `odd` says whether the effect flips with the direction's sign."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a rule name is a word such as 'additive', got {name!r}")
    if name in RULES:
        raise ValueError(f"steering rule {name!r} is already registered")
    RULES[name] = SteeringRule(name, apply, needs_calibration, defence_sign, toward_harm, odd)
    return RULES[name]


def get_rule(name: str) -> SteeringRule:
    """The registered rule `name`, or an error listing the known ones."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown steering mode {name!r}; use one of {', '.join(RULES)}") from None


def modes() -> tuple[str, ...]:
    """Names of the registered rules, in registration order (for choice lists)."""
    return tuple(RULES)


def defence_signs() -> dict[str, str]:
    """Which sign of alpha defends, per rule (shown next to every strength input)."""
    return {name: rule.defence_sign for name, rule in RULES.items()}


def _additive(h: torch.Tensor, unit: torch.Tensor, direction: torch.Tensor, alpha: float | torch.Tensor,
              calibration: torch.Tensor | None) -> torch.Tensor:
    return h + alpha * unit


def _ablation(h: torch.Tensor, unit: torch.Tensor, direction: torch.Tensor, alpha: float | torch.Tensor,
              calibration: torch.Tensor | None) -> torch.Tensor:
    return h - alpha * (h @ unit).unsqueeze(-1) * unit


def _adaptive(h: torch.Tensor, unit: torch.Tensor, direction: torch.Tensor, alpha: float | torch.Tensor,
              calibration: torch.Tensor | None) -> torch.Tensor:
    if calibration is None:
        raise ValueError("adaptive steering needs the benign mean (calibration)")
    centred = h - calibration
    lean = torch.nn.functional.cosine_similarity(centred, direction.expand_as(centred), dim=-1)
    strength = lean.clamp(0.0, 1.0) * h.norm(dim=-1)
    return h - alpha * strength.unsqueeze(-1) * unit


register_rule("additive", _additive, needs_calibration=False, defence_sign="negative alpha defends",
              toward_harm=lambda alpha: alpha > 0)
register_rule("ablation", _ablation, needs_calibration=False, defence_sign="alpha=1 removes the direction",
              toward_harm=lambda alpha: alpha < 0, odd=False)
register_rule("adaptive", _adaptive, needs_calibration=True, defence_sign="positive alpha defends",
              toward_harm=lambda alpha: alpha < 0)
