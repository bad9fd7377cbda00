"""Stage II's reward: a weighted sum of registered terms, each signed by the input's label.

Built-in terms (weight names in brackets):
    harmful input:  R = -w[toxicity] * toxicity + w[refusal] * refused            + w[fluency] * fluency
    benign input:   R = -w[toxicity] * toxicity + w[visual] * clip(image, text)   - w[refusal] * refused
                        + w[fluency] * fluency

Why: a refusal is the right answer to a harmful request even though it does not describe the image,
so visual consistency only counts on benign inputs, where refusing is over-refusal. Toxicity and
image-text similarity alone cannot tell a clean refusal from broken text (both score low on each),
so a refusal judge and a fluency term (mean per-token log-likelihood of the response under the
unsteered model, mapped to [0, 1] as exp(mean log p)) are added. A new term is one function and one
`register_reward_term` call; Stage II's metrics, its curves and the run's rewards.json pick it up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .refusal import RefusalJudge, keyword_judge
from .responses import ResponseScores, score_responses
from .toxicity import ToxicityScorer
from .visual import ClipScorer


@dataclass
class RewardBatch:
    """What a term sees: the inputs, the responses, their shared scores and their fluency."""

    images: Sequence[Image.Image | None]
    texts: Sequence[str]
    labels: Sequence[str]
    fluency: Sequence[float]
    scores: ResponseScores


@dataclass(frozen=True)
class RewardTerm:
    """`values(batch)` per response (None: not measured, contributes 0); `signed(value, label)` per unit weight;
    `metric`: the name its mean is logged under."""

    name: str
    metric: str
    values: Callable[[RewardBatch], Sequence[float | None]]
    signed: Callable[[float, str], float]
    default_weight: float


REWARD_TERMS: dict[str, RewardTerm] = {}


def register_reward_term(term: RewardTerm) -> RewardTerm:
    """Add a term to Stage II's reward (its weight defaults to `term.default_weight`)."""
    if term.name in REWARD_TERMS or term.metric in ("reward", *(t.metric for t in REWARD_TERMS.values())):
        raise ValueError(f"reward term {term.name!r} (metric {term.metric!r}) is already registered")
    REWARD_TERMS[term.name] = term
    return term


def reward_metrics() -> tuple[str, ...]:
    """Names of the logged means: the total reward, then one per term (Stage II curves and metrics read these)."""
    return ("reward", *(t.metric for t in REWARD_TERMS.values()))


register_reward_term(RewardTerm("toxicity", "toxicity", lambda b: b.scores.toxicity, lambda v, label: -v, 1.0))
register_reward_term(RewardTerm("visual", "visual_consistency", lambda b: b.scores.visual,
                                lambda v, label: v if label == "benign" else 0.0, 0.5))
register_reward_term(RewardTerm("refusal", "refusal_rate", lambda b: [float(r) for r in b.scores.refused],
                                lambda v, label: v if label == "harmful" else -v, 1.0))
register_reward_term(RewardTerm("fluency", "fluency", lambda b: b.fluency, lambda v, label: v, 0.5))


class RewardWeights(dict[str, float]):
    """One weight per registered term, defaulting to the term's own; unknown names are refused."""

    def __init__(self, given: Any = (), /, **weights: float) -> None:
        weights = {**dict(given), **weights}  # dataclasses.asdict rebuilds it from (name, weight) pairs
        unknown = sorted(set(weights) - set(REWARD_TERMS))
        if unknown:
            raise ValueError(f"unknown reward weight(s) {unknown}; terms are {', '.join(REWARD_TERMS)}")
        super().__init__({name: float(weights.get(name, term.default_weight)) for name, term in REWARD_TERMS.items()})

    def __getattr__(self, name: str) -> float:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class RewardBreakdown:
    """The total reward per response and each term's value per response (by term name)."""

    total: list[float]
    values: dict[str, list[float | None]]

    def means(self, rows: Sequence[int] | None = None) -> dict[str, float]:
        """Mean total reward and mean of each term's measured values over `rows` (default: all), by metric name."""
        rows = list(range(len(self.total))) if rows is None else list(rows)
        result = {"reward": _mean([self.total[i] for i in rows])}
        for name, term in REWARD_TERMS.items():
            measured = [v for v in (self.values[name][i] for i in rows) if v is not None]
            result[term.metric] = _mean(measured)
        return result


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass
class RewardModel:
    """The scorers and weights that turn responses into Stage II rewards."""

    toxicity: ToxicityScorer
    clip: ClipScorer | None
    weights: RewardWeights
    judge: RefusalJudge = keyword_judge

    def describe(self) -> dict[str, Any]:
        return {"toxicity_scorer": self.toxicity.name, "toxicity_note": self.toxicity.note,
                "clip": self.clip.name if self.clip else None, "weights": dict(self.weights),
                "refusal_judge": getattr(self.judge, "__name__", "custom")}

    def score(self, images: Sequence[Image.Image | None], texts: Sequence[str], labels: Sequence[str],
              fluency: Sequence[float]) -> RewardBreakdown:
        benign_with_image = [i for i, label in enumerate(labels) if label == "benign"]
        scores = score_responses(texts, images, self.toxicity, self.clip, self.judge, benign_with_image)
        batch = RewardBatch(images, texts, labels, fluency, scores)
        values = {name: list(term.values(batch)) for name, term in REWARD_TERMS.items()}
        total = []
        for i, label in enumerate(labels):
            reward = 0.0
            for name, term in REWARD_TERMS.items():
                value = values[name][i]
                if value is not None:
                    reward += self.weights.get(name, term.default_weight) * term.signed(value, label)
            total.append(reward)
        return RewardBreakdown(total, values)
