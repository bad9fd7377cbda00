"""VLM steering workbench: trace, score and steer vision-language models (SPO-VLM Stage I and II).

Data flows one module per step: dataset -> activations -> directions -> vectors -> steering ->
generations -> rewards -> refinement -> evaluation -> export. The names below are the front door;
they load on first use, so `import workbench` pulls in neither nnsight, torch models nor the app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# name -> module that defines it (loaded lazily by __getattr__)
_EXPORTS = {
    "load_vlm": "models", "VLM": "models",
    "Record": "data", "load_dataset": "sources", "register_source": "sources",
    "capture": "activations", "Activations": "activations",
    "run_stage1": "stage1", "load_stage1": "stage1", "Stage1Result": "stage1",
    "SteeringVector": "vectors",
    "Steering": "steering", "generate": "steering", "compare": "steering", "steer_hidden": "steering",
    "register_rule": "rules",
    "RewardModel": "rewards.combined", "RewardWeights": "rewards.combined", "RewardTerm": "rewards.combined",
    "register_reward_term": "rewards.combined",
    "ToxicityScorer": "rewards.toxicity", "load_clip": "rewards.visual",
    "Stage2Config": "stage2", "Stage2Run": "stage2", "register_objective": "preference",
    "evaluate": "evaluation", "EvalConfig": "evaluation",
}
__all__ = ["Activations", "EvalConfig", "Record", "RewardModel", "RewardTerm", "RewardWeights", "Stage1Result",
           "Stage2Config", "Stage2Run", "Steering", "SteeringVector", "ToxicityScorer", "VLM", "capture",
           "compare", "evaluate", "generate", "load_clip", "load_dataset", "load_stage1", "load_vlm",
           "register_objective", "register_reward_term", "register_rule", "register_source", "run_stage1",
           "steer_hidden"]
assert set(__all__) == set(_EXPORTS)  # one list, checked

if TYPE_CHECKING:
    from .activations import Activations, capture
    from .data import Record
    from .evaluation import EvalConfig, evaluate
    from .models import VLM, load_vlm
    from .preference import register_objective
    from .rewards.combined import RewardModel, RewardTerm, RewardWeights, register_reward_term
    from .rewards.toxicity import ToxicityScorer
    from .rewards.visual import load_clip
    from .rules import register_rule
    from .sources import load_dataset, register_source
    from .stage1 import Stage1Result, load_stage1, run_stage1
    from .stage2 import Stage2Config, Stage2Run
    from .steering import Steering, compare, generate, steer_hidden
    from .vectors import SteeringVector


def __getattr__(name: str) -> Any:
    """Load an exported name's module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
