"""Which evaluation metrics are also what the vectors were trained on: a Stage II vector rewarded for low toxicity,
keyword refusals or visual consistency "wins" on those metrics by construction, so each metric says whether it is
independent of the vectors' Stage II reward, read from the reward terms, weights and scorers the vector records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

INDEPENDENT = "independent"
# metric -> (the Stage II reward term that optimises it, the evaluation setting naming the scorer that measures it)
METRIC_TERMS = {"mean_toxicity": ("toxicity", "toxicity_scorer"), "refusal_rate": ("refusal", "refusal_judge"),
                "over_refusal": ("refusal", "refusal_judge"), "visual_consistency": ("visual", "clip")}
REWARD_SCORER = {"toxicity": "toxicity_scorer", "refusal": "refusal_judge", "visual": "clip"}


def reward_overlap(metadata: Mapping[str, Any] | None, measured_by: Mapping[str, Any],
                   asr_judge: str = "") -> dict[str, str]:
    """metric -> "independent", or why it is not: the same reward term and scorer ("the Stage II reward"), or the
    same quantity measured by another scorer ("the Stage II reward's quantity")."""
    rewards = (metadata or {}).get("rewards") or {}
    weights = rewards.get("weights") or {}
    found = {"asr": INDEPENDENT if "not independent" not in asr_judge else "not independent: " + asr_judge,
             "benign_accuracy": INDEPENDENT, "toxic_rate": INDEPENDENT}
    for metric, (term, setting) in METRIC_TERMS.items():
        weight = float(weights.get(term, 0.0) or 0.0)
        if weight == 0.0:
            found[metric] = INDEPENDENT
            continue
        trained_with, measured_with = rewards.get(REWARD_SCORER[term]), measured_by.get(setting)
        if trained_with == measured_with:
            found[metric] = f"the Stage II reward (term {term}, weight {weight:g}, {measured_with})"
        else:
            found[metric] = (f"the Stage II reward's quantity (term {term}, weight {weight:g}), trained with "
                             f"{trained_with}, measured with {measured_with}")
    return found


def flag(metric: str, independence: Mapping[str, str] | None) -> str:
    """A short mark for a table's metric label: '' when independent."""
    why = (independence or {}).get(metric, INDEPENDENT)
    if why == INDEPENDENT:
        return ""
    return " ⚠ the Stage II reward" if why.startswith("the Stage II reward (") else " ⚠ trained on it"
