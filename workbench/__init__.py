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
    "load_vlm": "core.models", "VLM": "core.models",
    "Record": "core.records", "load_dataset": "data.sources", "register_source": "data.sources",
    "capture": "stage1.activations", "Activations": "stage1.activations",
    "run_stage1": "stage1.pipeline", "load_stage1": "stage1.pipeline", "Stage1Result": "stage1.pipeline",
    "SteeringVector": "steer.vectors",
    "Steering": "steer.steering", "generate": "steer.steering", "compare": "steer.steering",
    "steer_hidden": "steer.steering",
    "register_rule": "steer.rules",
    "RewardModel": "rewards.combined", "RewardWeights": "rewards.combined", "RewardTerm": "rewards.combined",
    "register_reward_term": "rewards.combined",
    "ToxicityScorer": "rewards.toxicity", "load_clip": "rewards.visual",
    "Stage2Config": "stage2.loop", "Stage2Run": "stage2.loop", "register_objective": "stage2.objectives",
    "evaluate": "evaluate.evaluation", "EvalConfig": "evaluate.evaluation",
}
__all__ = ["Activations", "EvalConfig", "Record", "RewardModel", "RewardTerm", "RewardWeights", "Stage1Result",
           "Stage2Config", "Stage2Run", "Steering", "SteeringVector", "ToxicityScorer", "VLM", "capture",
           "compare", "evaluate", "generate", "load_clip", "load_dataset", "load_stage1", "load_vlm",
           "register_objective", "register_reward_term", "register_rule", "register_source", "run_stage1",
           "steer_hidden"]
assert set(__all__) == set(_EXPORTS)  # one list, checked

if TYPE_CHECKING:
    from .core.models import VLM, load_vlm
    from .core.records import Record
    from .data.sources import load_dataset, register_source
    from .evaluate.evaluation import EvalConfig, evaluate
    from .rewards.combined import RewardModel, RewardTerm, RewardWeights, register_reward_term
    from .rewards.toxicity import ToxicityScorer
    from .rewards.visual import load_clip
    from .stage1.activations import Activations, capture
    from .stage1.pipeline import Stage1Result, load_stage1, run_stage1
    from .stage2.loop import Stage2Config, Stage2Run
    from .stage2.objectives import register_objective
    from .steer.rules import register_rule
    from .steer.steering import Steering, compare, generate, steer_hidden
    from .steer.vectors import SteeringVector


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
