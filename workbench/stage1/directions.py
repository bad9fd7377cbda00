"""Per-layer harmful-vs-benign directions, layer scores, per-source directions and the adaptive rule's benign means.

Every direction points from benign to harmful. Mean difference keeps its natural length; the PCA
and probe directions are unit vectors rescaled to the length of the mean difference projected on
them, so the same strength means roughly the same push whichever method made the vector.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from .activations import Activations

Method = Literal["mean_diff", "pca", "probe"]
METHODS: tuple[str, ...] = ("mean_diff", "pca", "probe")
DirectionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (harmful [n,H], benign [m,H]) -> [H]


def mean_difference(harmful: torch.Tensor, benign: torch.Tensor) -> torch.Tensor:
    """Mean of harmful minus mean of benign."""
    return harmful.mean(0) - benign.mean(0)


def _rescale_like_mean_diff(unit: torch.Tensor, harmful: torch.Tensor, benign: torch.Tensor) -> torch.Tensor:
    """Orient `unit` benign->harmful and give it the length of the mean difference projected on it."""
    unit = unit / unit.norm().clamp_min(1e-12)
    projection = torch.dot(mean_difference(harmful, benign), unit)
    return unit * projection if projection != 0 else unit


def pca_direction(harmful: torch.Tensor, benign: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """First principal axis of paired (harmful - benign) differences (pairs drawn with a fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    count = min(len(harmful), len(benign))
    diffs = harmful[torch.randperm(len(harmful), generator=generator)[:count]] - \
        benign[torch.randperm(len(benign), generator=generator)[:count]]
    _, _, vh = torch.linalg.svd(diffs.double(), full_matrices=False)
    return _rescale_like_mean_diff(vh[0].float(), harmful, benign)


def probe_direction(harmful: torch.Tensor, benign: torch.Tensor) -> torch.Tensor:
    """Weight vector of an L2-regularised logistic probe (harmful=1). Features are centred and divided by
    one global scale, not per feature, so the geometry (and the weight direction) stays that of the
    residual stream instead of inflating low-variance noise dimensions."""
    from sklearn.linear_model import LogisticRegression  # here: scikit-learn costs ~0.7 s of every CLI start

    x = torch.cat([harmful, benign]).double().numpy()
    y = np.r_[np.ones(len(harmful)), np.zeros(len(benign))]
    x = (x - x.mean(0)) / max(float(x.std()), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = LogisticRegression(max_iter=2000).fit(x, y)
    return _rescale_like_mean_diff(torch.from_numpy(probe.coef_[0]).float(), harmful, benign)


DIRECTION_FNS: dict[str, DirectionFn] = {"mean_diff": mean_difference, "pca": pca_direction, "probe": probe_direction}


def _split(acts: Activations, layer: int, rows: torch.Tensor, benign_rows: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    harmful = acts.values[rows & acts.mask("harmful"), layer]
    benign = acts.values[(benign_rows if benign_rows is not None else rows) & acts.mask("benign"), layer]
    if len(harmful) == 0 or len(benign) == 0:
        raise ValueError("need at least one harmful and one benign record for a direction")
    return harmful, benign


def directions(acts: Activations, method: Method = "mean_diff", source: str | None = None) -> torch.Tensor:
    """[layers, hidden] directions from all records, or from one source (its harmful vs its benign,
    or vs all benign records when the source has none of its own)."""
    if method not in DIRECTION_FNS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    rows = acts.mask(source=source)
    benign_rows = rows if bool((rows & acts.mask("benign")).any()) else torch.ones_like(rows)
    return torch.stack([DIRECTION_FNS[method](*_split(acts, layer, rows, benign_rows))
                        for layer in range(acts.num_layers)])


def sources_with_harmful(acts: Activations) -> list[str]:
    return sorted({s for s, label in zip(acts.sources, acts.labels) if label == "harmful"})


def per_source_directions(acts: Activations, method: Method = "mean_diff") -> dict[str, torch.Tensor]:
    """One [layers, hidden] direction per source that has harmful records."""
    return {source: directions(acts, method, source) for source in sources_with_harmful(acts)}


def source_similarity(per_source: dict[str, torch.Tensor]) -> torch.Tensor:
    """[layers, S, S] cosine similarity between sources' directions at each layer."""
    stacked = torch.stack(list(per_source.values()), dim=1)  # [L, S, H]
    unit = stacked / stacked.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.transpose(1, 2)


def combined_direction(per_source: dict[str, torch.Tensor]) -> torch.Tensor:
    """Average of the sources' unit directions, rescaled to their mean length: each source counts equally,
    whatever its size (Stage I's "diverse data sources")."""
    stacked = torch.stack(list(per_source.values()))  # [S, L, H]
    norms = stacked.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    mean_unit = (stacked / norms).mean(0)
    mean_unit = mean_unit / mean_unit.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return mean_unit * norms.mean(0)


def benign_mean(acts: Activations) -> torch.Tensor:
    """[layers, hidden] mean benign activation: the adaptive rule's reference h̄ (the workbench's own: the
    mean at the capture position; ASTRA's protocol calibrates on benign response tokens)."""
    rows = acts.mask("benign")
    if not bool(rows.any()):
        raise ValueError("calibration needs benign records")
    return acts.values[rows].mean(0)
