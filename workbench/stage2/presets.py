"""Stage II presets: named recipes, so a run says which method it is (the paper's, or the project's own).

- `workbench` (the default): the project's own settings (`Stage2Config`'s defaults: DPO against the Stage I
  steering, reward = toxicity 1, visual consistency 0.5, keyword refusal 1, fluency 0.5).
- `spo-vlm`: SPO-VLM's Stage II (arXiv 2509.00373): sequence-level DPO on K on-policy samples, the VLM frozen,
  rewarded by toxicity and visual consistency only; no injected reply, no refusal or fluency term.
- `workbench-refusal`: the project's refusal variant: GRPO with a safe reply put in place of one sample of every
  harmful prompt and the keyword refusal term (a supervised push toward a chosen string, not SPO-VLM).

A preset fixes some `Stage2Config` fields; anything the user gives explicitly wins, and the steering settings not
given come from the vector (`steering_for`: what Stage I recorded or suggested).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..rewards.combined import REWARD_TERMS, RewardWeights
from ..steer.steering import steering_for
from ..steer.vectors import SteeringVector
from .loop import Stage2Config


@dataclass(frozen=True)
class Stage2Preset:
    """A named recipe: one line saying what it is, and the config fields it fixes."""

    name: str
    summary: str
    settings: dict[str, Any]
    faithful: bool  # True: a published method; False: the project's own variant (labelled wherever it appears)


ORGANISM_REFUSAL = "sorry , i cannot help with that ."  # the organism's own text-route refusal

PRESETS: dict[str, Stage2Preset] = {p.name: p for p in (
    Stage2Preset("workbench", "the project's own default: DPO against the Stage I steering; reward toxicity 1, "
                 "visual consistency 0.5, keyword refusal 1, fluency 0.5", {}, False),
    Stage2Preset("spo-vlm", "SPO-VLM's Stage II: sequence-level DPO on K on-policy samples against the Stage I "
                 "steering; reward toxicity 1 + visual consistency 0.5 only",
                 {"objective": "dpo", "reference": "initial", "safe_response": None,
                  "weights": {"toxicity": 1.0, "visual": 0.5, "refusal": 0.0, "fluency": 0.0}}, True),
    Stage2Preset("workbench-refusal", "the project's refusal variant (not SPO-VLM): GRPO, a safe reply put in place "
                 "of one sample of each harmful prompt, keyword refusal reward; 150 steps",
                 {"objective": "grpo", "steps": 150, "safe_response": "required"}, False),
)}


def parse_reward_weights(text: str) -> RewardWeights:
    """'toxicity=1,visual=0.5' -> those weights, every term not named at 0 (what is written is what trains)."""
    given: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.partition("=")
        try:
            given[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--reward takes name=weight pairs such as toxicity=1,visual=0.5; got {part!r}") from None
    unknown = sorted(set(given) - set(REWARD_TERMS))
    if unknown or not given:
        raise ValueError(f"--reward names terms from {', '.join(REWARD_TERMS)}, e.g. toxicity=1,visual=0.5 "
                         f"(got {text!r})")
    return RewardWeights({name: given.get(name, 0.0) for name in REWARD_TERMS})


def stage2_config(preset: str, vector: SteeringVector, given: dict[str, Any], model: str = "") -> tuple[Stage2Config,
                                                                                                         str]:
    """The config for `preset` with the user's explicit settings (`given`, None = not given) on top; mode, alpha,
    layers and steer_at not given come from the vector. Also one line saying where the steering came from."""
    if preset not in PRESETS:
        raise ValueError(f"unknown Stage II preset {preset!r}; use one of {', '.join(PRESETS)}")
    settings: dict[str, Any] = dict(PRESETS[preset].settings)
    explicit = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(explicit) - {f.name for f in fields(Stage2Config)})
    if unknown:
        raise ValueError(f"unknown Stage II setting(s) {unknown}")
    settings.update(explicit)
    if settings.get("safe_response") == "required":
        if model != "organism":
            raise ValueError("the workbench-refusal preset needs --safe-response TEXT (the reply to prefer for harmful "
                             "prompts, e.g. the model's own refusal)")
        settings["safe_response"] = ORGANISM_REFUSAL
    layers = settings.pop("layers", None)
    steering, note = steering_for(vector, settings.pop("mode", None), settings.pop("alpha", None), layers,
                                  settings.pop("steer_at", None))
    config = Stage2Config(**settings, mode=steering.mode, alpha=steering.alpha,
                          layers=list(steering.active_layers), steer_at=steering.steer_at, preset=preset)
    return config, note
