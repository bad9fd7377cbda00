"""Directions and layer scores on activations with a planted harmful direction."""

from __future__ import annotations

import math

import torch

from workbench import directions as D
from workbench.activations import Activations


def _planted(n: int = 40, hidden: int = 16, seed: int = 0) -> tuple[Activations, torch.Tensor, torch.Tensor]:
    """Layer 0: pure noise. Layer 1: source 'text' separates along e0, source 'image' along e1."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(4 * n, 2, hidden, generator=generator) * 0.5
    labels = (["harmful"] * n + ["benign"] * n) * 2
    sources = ["text"] * 2 * n + ["image"] * 2 * n
    e0, e1 = torch.eye(hidden)[0], torch.eye(hidden)[1]
    values[:n, 1] += 3 * e0
    values[2 * n:3 * n, 1] += 3 * e1
    return Activations(values, labels, sources, [f"p{i}" for i in range(4 * n)]), e0, e1


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_each_method_recovers_the_planted_source_direction() -> None:
    acts, e0, e1 = _planted()
    for method in D.METHODS:
        text = D.directions(acts, method, source="text")[1]
        image = D.directions(acts, method, source="image")[1]
        assert _cos(text, e0) > 0.9 and _cos(image, e1) > 0.9, method
        # benign -> harmful orientation and mean-difference scale
        assert 2.0 < float(text @ e0) < 4.0, method


def test_layer_scores_separate_planted_layer_from_noise() -> None:
    acts, _, _ = _planted()
    noise, planted = D.layer_scores(acts)
    assert planted.probe_accuracy > 0.95 and planted.auroc > 0.95 and planted.separation > 1.5
    assert noise.probe_accuracy < 0.75 and abs(noise.auroc - 0.5) < 0.2


def test_sources_disagree_and_combined_direction_covers_both() -> None:
    acts, e0, e1 = _planted()
    per_source = D.per_source_directions(acts)
    similarity = D.source_similarity(per_source)
    assert similarity.shape == (2, 2, 2)
    assert abs(float(similarity[1, 0, 1])) < 0.2  # orthogonal routes, as the organism notes predict
    combined = D.combined_direction(per_source)[1]
    assert math.isclose(_cos(combined, e0), _cos(combined, e1), abs_tol=0.1) and _cos(combined, e0) > 0.6


def test_benign_mean_is_the_calibration_reference() -> None:
    acts, _, _ = _planted()
    torch.testing.assert_close(D.benign_mean(acts), acts.values[acts.mask("benign")].mean(0))


def test_suggested_layers_leave_out_the_last_layer_and_keep_the_near_best() -> None:
    from workbench.directions import LayerScore
    from workbench.stage1 import Stage1Result

    def result(aurocs: list[float]) -> Stage1Result:
        scores = [LayerScore(i, 0.9, a, 1.0 + i, 1.0) for i, a in enumerate(aurocs)]
        return Stage1Result(None, None, scores, {}, None)  # type: ignore[arg-type]

    assert result([0.97, 0.9995, 0.9997, 1.0]).suggested_layers() == [1, 2]
    assert result([0.6, 0.8, 0.7, 0.99]).suggested_layers() == [1]
    assert result([0.99, 0.99, 0.99, 0.99, 0.99, 1.0]).suggested_layers() == [2, 3, 4]  # at most 3: ties by d
    assert result([0.9]).suggested_layers() == [0]
