"""Judge a batch of responses once: toxicity and refusal for every text, visual consistency where asked.

The one place responses are scored: Stage II's reward, the evaluation and the app's playground all call
`score_responses`, so a judge or scorer swap changes every figure the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from .refusal import RefusalJudge, keyword_judge
from .toxicity import ToxicityScorer
from .visual import ClipScorer


@dataclass
class ResponseScores:
    """Per response: toxicity in [0, 1], refused or not, and image-text similarity (None where not measured)."""

    toxicity: list[float]
    refused: list[bool]
    visual: list[float | None]


def score_responses(texts: Sequence[str], images: Sequence[Image.Image | None], toxicity: ToxicityScorer,
                    clip: ClipScorer | None, judge: RefusalJudge = keyword_judge,
                    visual_rows: Sequence[int] | None = None) -> ResponseScores:
    """Scores for `texts`; visual consistency for the rows in `visual_rows` (default: every row with an image)
    when a CLIP model is given."""
    if len(texts) != len(images):
        raise ValueError(f"{len(texts)} responses but {len(images)} images")
    visual: list[float | None] = [None] * len(texts)
    rows = [i for i in (range(len(texts)) if visual_rows is None else visual_rows) if images[i] is not None]
    if clip is not None and rows:
        values = clip([images[i] for i in rows], [texts[i] for i in rows])  # type: ignore[misc]
        for i, value in zip(rows, values):
            visual[i] = float(value)
    return ResponseScores([float(x) for x in toxicity(texts)], [bool(x) for x in judge(texts)], visual)
