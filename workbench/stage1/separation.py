"""How well harmful and benign separate at each layer, measured on data the direction never saw.

For every layer: a k-fold cross-validated logistic probe, and the AUROC and Cohen's d of the
projection of each held-out fold on the mean-difference direction built from the other folds (pooled
out of fold). Scoring the records that built the direction would call every layer separable: on pure
noise in high dimensions the in-sample AUROC is 1.0 (kept as `auroc_in_sample`, for comparison only).

Picking the best of L layers is itself a search, so the bar is family-wise: `auroc_null` is the 95th
percentile, over label shuffles, of the *maximum over layers* of the held-out AUROC. A layer is
significant only above it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from .activations import Activations

NULL_PERMUTATIONS = 200  # label shuffles behind the null (>= 100 keeps its 95th percentile stable)
NULL_QUANTILE = 0.95


@dataclass
class LayerScore:
    """How well harmful and benign separate at one layer (held out), and the bar it must clear."""

    layer: int
    probe_accuracy: float  # k-fold cross-validated logistic probe accuracy
    auroc: float  # held-out AUROC of the projection on the mean-difference direction of the other folds
    separation: float  # held-out Cohen's d of that projection: (mean_h - mean_b) / pooled std
    direction_norm: float  # length of the mean difference on all records
    auroc_null: float = 0.5  # family-wise null (the same for every layer of a run); NaN: not computed
    auroc_in_sample: float = math.nan  # AUROC on the records that built the direction (optimistic)
    probe_baseline: float = math.nan  # the majority class's share: what a probe gets by always guessing it

    @property
    def significant(self) -> bool:
        """Held-out AUROC above the family-wise null (False when either is unknown)."""
        return bool(self.auroc > self.auroc_null)  # NaN compares False


def _fold_ids(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each record's held-out fold, stratified by label."""
    ids = np.empty(len(y), dtype=int)
    for fold, (_, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)):
        ids[test] = fold
    return ids


def held_out_projections(x: torch.Tensor, labels: torch.Tensor, fold_ids: np.ndarray) -> torch.Tensor:
    """[P, N] projections of each record on the unit mean difference of the other folds, for P labelings
    [P, N] (1 = harmful) at once."""
    out = torch.zeros(labels.shape, dtype=x.dtype)
    for fold in np.unique(fold_ids):
        test = torch.from_numpy(fold_ids == fold)
        train = labels[:, ~test].to(x.dtype)
        weights = train / train.sum(1, keepdim=True).clamp_min(1) - (1 - train) / (1 - train).sum(1, keepdim=True
                                                                                                ).clamp_min(1)
        directions = weights @ x[~test]  # [P, H]: mean(harmful) - mean(benign) on the training folds
        directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[:, test] = directions @ x[test].T
    return out


def auroc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC per row (Mann-Whitney with average ranks for ties), for [P, N] scores and 0/1 labels."""
    ranks = rankdata(scores, axis=1)
    positives = labels.sum(1)
    negatives = labels.shape[1] - positives
    return ((ranks * labels).sum(1) - positives * (positives + 1) / 2) / np.maximum(positives * negatives, 1)


def _cohens_d(projection: np.ndarray, y: np.ndarray) -> float:
    pooled = np.sqrt((projection[y == 1].var() + projection[y == 0].var()) / 2) + 1e-12
    return float((projection[y == 1].mean() - projection[y == 0].mean()) / pooled)


def layer_scores(acts: Activations, folds: int = 5, seed: int = 0,
                 permutations: int = NULL_PERMUTATIONS) -> list[LayerScore]:
    """Score every layer on held-out folds, with the family-wise shuffled-label null."""
    y = np.array([label == "harmful" for label in acts.labels], dtype=int)
    if y.min() == y.max():
        raise ValueError("layer scores need both harmful and benign records")
    minority = int(np.bincount(y).min())
    folds = max(2, min(folds, minority))
    held_out = minority >= 2  # one example of a class cannot be both held out and learnt from
    rng = np.random.default_rng(seed)
    labelings = np.stack([y, *(rng.permutation(y) for _ in range(permutations))])  # row 0: the true labels
    fold_ids = _fold_ids(y, folds, seed) if held_out else np.zeros(len(y), dtype=int)
    aurocs = np.full((acts.num_layers, len(labelings)), np.nan)
    scores = []
    for layer in range(acts.num_layers):
        x = acts.values[:, layer].double()
        direction = x[y == 1].mean(0) - x[y == 0].mean(0)
        in_sample = (x @ (direction / direction.norm().clamp_min(1e-12))).numpy()
        auroc, d = math.nan, math.nan
        if held_out:
            projections = held_out_projections(x, torch.from_numpy(labelings), fold_ids).numpy()
            aurocs[layer] = auroc_rows(projections, labelings)
            auroc, d = float(aurocs[layer, 0]), _cohens_d(projections[0], y)
        scores.append(LayerScore(layer, _cv_probe_accuracy(x.numpy(), y, folds, seed), auroc, d,
                                 float(direction.norm()), auroc_in_sample=float(roc_auc_score(y, in_sample))))
    null = float(np.quantile(aurocs[:, 1:].max(0), NULL_QUANTILE)) if held_out and permutations else math.nan
    baseline = float(np.bincount(y).max() / len(y)) if len(y) else math.nan
    for score in scores:
        score.auroc_null = null
        score.probe_baseline = baseline
    return scores


def _cv_probe_accuracy(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> float:
    if np.bincount(y).min() < 2:
        return float("nan")  # one example of a class cannot be cross-validated
    correct = 0
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        scaler = StandardScaler().fit(x[train])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x[train]), y[train])
        correct += int((probe.predict(scaler.transform(x[test])) == y[test]).sum())
    return correct / len(y)
