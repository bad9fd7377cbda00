"""Stage II's reward: toxicity, visual consistency, refusal and fluency, weighted by the input's label.

    harmful input:  R = -w_tox * toxicity + w_refusal * refused            + w_fluency * fluency
    benign input:   R = -w_tox * toxicity + w_visual * clip(image, text)   - w_refusal * refused + w_fluency * fluency

Why: a refusal is the right answer to a harmful request even though it does not describe the image,
so visual consistency only counts on benign inputs, where refusing is over-refusal. Toxicity and
image-text similarity alone cannot tell a clean refusal from broken text (both score low on each),
so a refusal judge and a fluency term (mean per-token log-likelihood of the response under the
unsteered model, mapped to [0, 1] as exp(mean log p)) are added; every weight is configurable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from PIL import Image

from .refusal import RefusalJudge, keyword_judge
from .toxicity import ToxicityScorer
from .visual import ClipScorer


@dataclass
class RewardWeights:
    toxicity: float = 1.0
    visual: float = 0.5
    refusal: float = 1.0
    fluency: float = 0.5


@dataclass
class RewardBreakdown:
    total: list[float]
    toxicity: list[float]
    visual: list[float | None]
    refused: list[bool]
    fluency: list[float]

    def means(self, rows: Sequence[int] | None = None) -> dict[str, float]:
        """Mean of each term over `rows` (default: all)."""
        rows = list(range(len(self.total))) if rows is None else list(rows)
        visual = [self.visual[i] for i in rows if self.visual[i] is not None]
        n = max(1, len(rows))
        return {"reward": sum(self.total[i] for i in rows) / n, "toxicity": sum(self.toxicity[i] for i in rows) / n,
                "visual_consistency": sum(visual) / len(visual) if visual else float("nan"),
                "refusal_rate": sum(self.refused[i] for i in rows) / n, "fluency": sum(self.fluency[i] for i in rows) / n}


@dataclass
class RewardModel:
    toxicity: ToxicityScorer
    clip: ClipScorer | None
    weights: RewardWeights
    judge: RefusalJudge = keyword_judge

    def describe(self) -> dict:
        return {"toxicity_scorer": self.toxicity.name, "toxicity_note": self.toxicity.note,
                "clip": self.clip.name if self.clip else None, "weights": asdict(self.weights),
                "refusal_judge": getattr(self.judge, "__name__", "custom")}

    def score(self, images: Sequence[Image.Image | None], texts: Sequence[str], labels: Sequence[str],
              fluency: Sequence[float]) -> RewardBreakdown:
        toxicity = self.toxicity(texts)
        refused = self.judge(texts)
        visual: list[float | None] = [None] * len(texts)
        pairs = [i for i, (image, label) in enumerate(zip(images, labels)) if image is not None and label == "benign"]
        if self.clip is not None and pairs:
            for i, value in zip(pairs, self.clip([images[i] for i in pairs], [texts[i] for i in pairs])):
                visual[i] = value
        w = self.weights
        total = []
        for i, label in enumerate(labels):
            value = -w.toxicity * toxicity[i] + w.fluency * fluency[i]
            if label == "harmful":
                value += w.refusal * refused[i]
            else:
                value += w.visual * (visual[i] or 0.0) - w.refusal * refused[i]
            total.append(value)
        return RewardBreakdown(total, toxicity, visual, refused, list(fluency))
