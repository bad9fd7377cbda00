"""Directions and layer scores on activations with a planted harmful direction."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from workbench.stage1 import directions as D
from workbench.stage1.activations import Activations
from workbench.stage1.separation import LayerScore, auroc_rows, layer_scores


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
    noise, planted = layer_scores(acts)
    assert planted.probe_accuracy > 0.95 and planted.auroc > 0.95 and planted.separation > 1.5
    assert noise.probe_accuracy < 0.75 and abs(noise.auroc - 0.5) < 0.2
    assert 0.5 < planted.auroc_null == noise.auroc_null < planted.auroc
    assert planted.significant and not noise.significant
    assert planted.probe_baseline == noise.probe_baseline == 0.5  # balanced classes: chance is a coin


def test_probe_accuracy_is_shown_beside_its_majority_baseline() -> None:
    """With 3 harmful for 1 benign, always saying harmful scores 0.75: that is the bar a probe must clear."""
    generator = torch.Generator().manual_seed(0)
    acts = Activations(torch.randn(40, 2, 16, generator=generator), ["harmful"] * 30 + ["benign"] * 10,
                       ["noise"] * 40, [f"p{i}" for i in range(40)])
    assert [score.probe_baseline for score in layer_scores(acts, permutations=5)] == [0.75, 0.75]


def _noise(n: int, layers: int, hidden: int, seed: int) -> Activations:
    generator = torch.Generator().manual_seed(seed)
    labels = ["harmful"] * n + ["benign"] * n
    return Activations(torch.randn(2 * n, layers, hidden, generator=generator), labels, ["noise"] * 2 * n,
                       [f"p{i}" for i in range(2 * n)])


def test_on_noise_the_in_sample_auroc_is_perfect_and_the_held_out_one_is_at_chance() -> None:
    scores = layer_scores(_noise(50, 3, 1024, seed=0), permutations=100)
    assert all(s.auroc_in_sample == 1.0 for s in scores)  # what the workbench used to report
    assert all(abs(s.auroc - 0.5) < 0.2 and not s.significant for s in scores)


@pytest.mark.slow
def test_random_labels_suggest_a_layer_in_about_5_percent_of_seeds() -> None:
    from workbench.stage1.pipeline import Stage1Result

    suggested = 0
    for seed in range(40):
        scores = layer_scores(_noise(20, 5, 32, seed), seed=seed, permutations=100)
        suggested += bool(Stage1Result(None, None, scores, {}, None).suggested_layers())  # type: ignore[arg-type]
    assert suggested <= 5, f"{suggested} of 40 random-label datasets got a suggested layer"


def test_auroc_rows_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(5, 30))
    scores = rng.integers(0, 4, size=(5, 30)).astype(float)  # many ties
    expected = [roc_auc_score(y, s) for y, s in zip(labels, scores)]
    np.testing.assert_allclose(auroc_rows(scores, labels), expected)


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
    from workbench.stage1.pipeline import Stage1Result

    def result(aurocs: list[float], null: float = 0.5) -> Stage1Result:
        scores = [LayerScore(i, 0.9, a, 1.0 + i, 1.0, null) for i, a in enumerate(aurocs)]
        return Stage1Result(None, None, scores, {}, None)  # type: ignore[arg-type]

    assert result([0.97, 0.9995, 0.9997, 1.0]).suggested_layers() == [1, 2]
    assert result([0.6, 0.8, 0.7, 0.99]).suggested_layers() == [1]
    assert result([0.99, 0.99, 0.99, 0.99, 0.99, 1.0]).suggested_layers() == [2, 3, 4]  # at most 3: ties by d
    assert result([0.9]).suggested_layers() == [0]
    assert result([0.6, 0.8, 0.7, 0.84], null=0.85).suggested_layers() == []  # nothing clears the null
    assert "no layer separates" in result([0.6, 0.8, 0.7, 0.84], null=0.85).verdict()
    only_last = result([0.6, 0.8, 0.7, 0.99], null=0.85)
    assert only_last.suggested_layers() == [] and "only the last layer separates" in only_last.verdict()
    assert result([0.6, 0.8], null=float("nan")).suggested_layers() == []  # a run saved before the null


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_the_separation_projection_keeps_harmful_and_benign_apart_and_repeats(method: str) -> None:
    """What the Stage I scatter shows: two planted clusters stay apart in 2-D (each point's nearest neighbour
    has its label), every record is one marker with its prompt on hover, and the same seed draws the same plot."""
    from workbench.export.plots import project_2d, separation_figure

    generator = torch.Generator().manual_seed(0)
    shift = torch.zeros(32)
    shift[:4] = 4.0
    values = torch.cat([torch.randn(30, 32, generator=generator) + shift, torch.randn(30, 32, generator=generator)])
    labels = ["harmful"] * 30 + ["benign"] * 30
    points = project_2d(values, method)
    assert points.shape == (60, 2) and np.isfinite(points).all()
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(60) * 1e9
    nearest = distances.argmin(1)
    assert np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)]) >= 0.95
    np.testing.assert_allclose(project_2d(values, method), points, rtol=1e-4, atol=1e-4)
    figure = separation_figure(points, labels, ["typographic", "text"] * 30, [f"prompt {i}" for i in range(60)], 3,
                               method)
    assert sum(len(trace.x) for trace in figure.data) == 60
    assert {trace.name.split(" · ")[0] for trace in figure.data} == {"harmful", "benign"}
    assert method.upper() in figure.layout.title.text and "layer 3" in figure.layout.title.text


def test_combined_direction_and_source_similarity_by_hand() -> None:
    """Two sources of unequal length per layer: each counts equally in direction, the length is their mean."""
    per_source = {"text": torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 5.0]]),
                  "image": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}
    root2 = math.sqrt(2.0)
    torch.testing.assert_close(D.combined_direction(per_source), torch.tensor([[root2, root2, 0.0], [0.0, 0.0, 3.0]]))
    torch.testing.assert_close(D.source_similarity(per_source), torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
                                                                              [[1.0, 1.0], [1.0, 1.0]]]))
    tiny = {"a": torch.tensor([[1e-8, 0.0, 0.0]]), "b": torch.tensor([[0.0, 1e-8, 0.0]])}  # short, yet unit cosines
    torch.testing.assert_close(D.source_similarity(tiny), torch.eye(2).unsqueeze(0))
    torch.testing.assert_close(D.combined_direction(tiny), torch.tensor([[1e-8, 1e-8, 0.0]]) / root2, atol=0, rtol=1e-5)


def test_pca_and_probe_directions_match_their_definitions() -> None:
    """PCA pairs a seeded draw of rows and finds the axis of their differences, not of the shared offset; the probe
    is a logistic regression on globally scaled features; both come back at the mean difference's length."""
    from sklearn.linear_model import LogisticRegression

    generator = torch.Generator().manual_seed(5)
    offset = torch.tensor([0.0, 0.0, 10.0, 0.0])  # every activation shares it
    harmful = offset + torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.1 * torch.randn(7, 4, generator=generator)
    benign = offset - torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.1 * torch.randn(5, 4, generator=generator)
    pca = D.pca_direction(harmful, benign)
    assert _cos(pca, torch.tensor([1.0, 0.0, 0.0, 0.0])) > 0.99  # 7 vs 5 rows: 5 pairs
    torch.testing.assert_close(pca, D.pca_direction(harmful, benign, seed=0), rtol=0, atol=0)
    assert not torch.equal(D.pca_direction(harmful, benign, seed=1), pca)  # another draw pairs other rows
    unit = pca / pca.norm()
    assert float(pca.norm()) == pytest.approx(float(torch.dot(D.mean_difference(harmful, benign), unit)), rel=1e-5)

    small_h, small_b = harmful * 0.01, benign * 0.01  # global spread under 1: the scale matters
    x = torch.cat([small_h, small_b]).double().numpy()
    x = (x - x.mean(0)) / x.std()
    coef = torch.from_numpy(LogisticRegression(max_iter=2000).fit(x, np.r_[np.ones(7), np.zeros(5)]).coef_[0]).float()
    expected = coef / coef.norm()
    expected = expected * torch.dot(D.mean_difference(small_h, small_b), expected)
    torch.testing.assert_close(D.probe_direction(small_h, small_b), expected, rtol=1e-4, atol=1e-7)


def test_rescaling_keeps_a_direction_with_no_mean_difference_and_normalises_a_short_one() -> None:
    from workbench.stage1.directions import _rescale_like_mean_diff

    same = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    torch.testing.assert_close(_rescale_like_mean_diff(torch.tensor([0.0, 2.0]), same, same), torch.tensor([0.0, 1.0]))
    harmful, benign = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 1.0]])  # mean difference (2, 0)
    torch.testing.assert_close(_rescale_like_mean_diff(torch.tensor([0.1, 0.0]), harmful, benign),
                               torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(_rescale_like_mean_diff(torch.tensor([-0.1, 0.0]), harmful, benign),
                               torch.tensor([2.0, 0.0]))  # oriented benign -> harmful


def test_calibration_is_the_benign_mean_and_needs_benign_records() -> None:
    acts, _, _ = _planted(n=4)
    benign = torch.tensor([label == "benign" for label in acts.labels])
    torch.testing.assert_close(D.benign_mean(acts), acts.values[benign].mean(0))
    only_harmful = Activations(acts.values[~benign], ["harmful"] * int((~benign).sum()),
                               [s for s, b in zip(acts.sources, benign) if not b], ["p"] * int((~benign).sum()))
    with pytest.raises(ValueError) as error:
        D.benign_mean(only_harmful)
    assert str(error.value) == "calibration needs benign records"


def test_directions_default_to_the_mean_difference_and_a_source_without_benign_uses_all_benign() -> None:
    """Per source: its harmful against its own benign records, or against every benign record when it has none."""
    acts, _, _ = _planted(n=4)
    labels = [("harmful" if source == "image" else label) for source, label in zip(acts.sources, acts.labels)]
    mixed = Activations(acts.values, labels, acts.sources, acts.prompts)  # "image" now has no benign records
    def harmful(source: str) -> torch.Tensor:
        return torch.tensor([lab == "harmful" and s == source for lab, s in zip(labels, acts.sources)])

    benign = torch.tensor([lab == "benign" for lab in labels])
    for source in ("image", "text"):
        expected = mixed.values[harmful(source)].mean(0) - mixed.values[benign].mean(0)  # text's are all the benign
        torch.testing.assert_close(D.directions(mixed, source=source), expected)
    own = torch.tensor([lab == "benign" and s == "text" for lab, s in zip(acts.labels, acts.sources)])
    text_harmful = torch.tensor([lab == "harmful" and s == "text" for lab, s in zip(acts.labels, acts.sources)])
    torch.testing.assert_close(D.directions(acts, source="text"),
                               acts.values[text_harmful].mean(0) - acts.values[own].mean(0))
    torch.testing.assert_close(D.directions(acts), D.directions(acts, "mean_diff"))
    with pytest.raises(ValueError) as error:
        D.directions(acts, "median")
    assert str(error.value) == "unknown method 'median'; use one of mean_diff, pca, probe"
    one_each = Activations(acts.values[:2], ["harmful", "benign"], ["s", "s"], ["a", "b"])
    torch.testing.assert_close(D.directions(one_each), acts.values[0] - acts.values[1])  # one of each is enough
    for labels in (["harmful", "harmful"], ["benign", "benign"]):
        with pytest.raises(ValueError) as error:
            D.directions(Activations(acts.values[:2], labels, ["s", "s"], ["a", "b"]))
        assert str(error.value) == "need at least one harmful and one benign record for a direction"


def test_held_out_projections_use_only_the_other_folds_by_hand() -> None:
    """Each record is projected on the unit mean difference of the other folds' records (never its own fold's),
    for every labeling at once; a fold whose training part holds a single harmful record uses that record."""
    from workbench.stage1.separation import _fold_ids, held_out_projections

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(9, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 0, 0], [0, 1, 1, 0, 1, 0, 0, 1, 0]])
    folds = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    expected = torch.zeros(2, 9, dtype=torch.float64)
    for row in range(2):
        for i in range(9):
            train = folds != folds[i]
            harmful = [j for j in range(9) if train[j] and labels[row, j] == 1]
            benign = [j for j in range(9) if train[j] and labels[row, j] == 0]
            direction = x[harmful].mean(0) - x[benign].mean(0)
            expected[row, i] = x[i] @ (direction / direction.norm())
    torch.testing.assert_close(held_out_projections(x, labels, folds), expected)
    y = np.array([1] * 10 + [0] * 15)
    ids = _fold_ids(y, 5, seed=0)
    assert (ids == _fold_ids(y, 5, seed=0)).all() and not (ids == _fold_ids(y, 5, seed=1)).all()  # seeded
    assert sorted(np.bincount(ids[y == 1])) == [2] * 5 and sorted(np.bincount(ids[y == 0])) == [3] * 5  # stratified


def test_cohens_d_keeps_its_sign_when_each_class_is_constant() -> None:
    """A layer that separates perfectly with no spread inside a class has a huge positive effect, not a negative one."""
    from workbench.stage1.separation import _cohens_d

    assert _cohens_d(np.array([1.0, 1.0, 0.0, 0.0]), np.array([1, 1, 0, 0])) > 1e9
    assert _cohens_d(np.array([0.0, 0.0, 1.0, 1.0]), np.array([1, 1, 0, 0])) < -1e9


def _expected_scores(acts: Activations, folds: int, seed: int, permutations: int) -> list[dict]:
    """layer_scores by its definition, one record and one labeling at a time (sklearn for the probe and AUROC)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([label == "harmful" for label in acts.labels], dtype=int)
    minority = min(y.sum(), len(y) - y.sum())
    folds = max(2, min(folds, minority))
    fold_of = np.zeros(len(y), dtype=int)
    if minority >= 2:
        for fold, (_, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)):
            fold_of[test] = fold
    rng = np.random.default_rng(seed)
    shuffles = [rng.permutation(y) for _ in range(permutations)]

    def held_out(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = np.zeros(len(labels))
        for i in range(len(labels)):
            train = fold_of != fold_of[i]
            # a shuffle can leave a class out of the training folds: its mean counts as zero (as implemented)
            harmful, benign = x[train & (labels == 1)], x[train & (labels == 0)]
            mean_diff = harmful.sum(0) / max(len(harmful), 1) - benign.sum(0) / max(len(benign), 1)
            out[i] = x[i] @ mean_diff / max(np.linalg.norm(mean_diff), 1e-12)
        return out

    rows, null_rows = [], []
    for layer in range(acts.num_layers):
        x = acts.values[:, layer].double().numpy()
        mean_diff = x[y == 1].mean(0) - x[y == 0].mean(0)
        row = {"layer": layer, "direction_norm": np.linalg.norm(mean_diff),
               "auroc_in_sample": roc_auc_score(y, x @ mean_diff / np.linalg.norm(mean_diff)),
               "auroc": math.nan, "separation": math.nan, "probe_accuracy": math.nan}
        if minority >= 2:
            p = held_out(x, y)
            row["auroc"] = roc_auc_score(y, p)
            row["separation"] = (p[y == 1].mean() - p[y == 0].mean()) / np.sqrt((p[y == 1].var() + p[y == 0].var()) / 2)
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            predicted = cross_val_predict(probe, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
            row["probe_accuracy"] = float(np.mean(predicted == y))
            null_rows.append([roc_auc_score(s, held_out(x, s)) for s in shuffles])
        rows.append(row)
    null = float(np.quantile(np.max(null_rows, axis=0), 0.95)) if minority >= 2 and permutations else math.nan
    return [dict(row, auroc_null=null) for row in rows]


def _graded(harmful: int, benign: int, seed: int = 3) -> Activations:
    """Two layers with partial separation (AUROC well inside (0.5, 1)), so every fold and seed choice shows."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(harmful + benign, 2, 6, generator=generator)
    values[:harmful, 1, 0] += 1.0
    values[:harmful, 0, :2] += 0.4
    labels = ["harmful"] * harmful + ["benign"] * benign
    return Activations(values, labels, ["s"] * len(labels), [f"p{i}" for i in range(len(labels))])


@pytest.mark.parametrize(("harmful", "benign", "kwargs"), [
    (24, 20, {}),  # the defaults: 5 folds, seed 0, 200 shuffles
    (20, 24, {"folds": 3, "seed": 7, "permutations": 30}),
    (3, 9, {"permutations": 30}),  # folds capped at the minority class's size
    (9, 2, {"permutations": 30}),  # two of a class: two folds, still held out
    (1, 8, {"permutations": 30}),  # one of a class: nothing can be held out
    (12, 12, {"permutations": 0}),  # no shuffles: no null
])
def test_layer_scores_match_their_definition_computed_one_record_at_a_time(harmful: int, benign: int,
                                                                            kwargs: dict) -> None:
    """Every field of every layer against a slow, independent computation of what the docstrings promise."""
    acts = _graded(harmful, benign)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no folds are cut for a class of one (sklearn would warn)
        got = layer_scores(acts, **kwargs)
    expected = _expected_scores(acts, kwargs.get("folds", 5), kwargs.get("seed", 0), kwargs.get("permutations", 200))
    assert [s.layer for s in got] == [0, 1]
    for score, want in zip(got, expected):
        for field, value in want.items():
            np.testing.assert_allclose(getattr(score, field), value, rtol=1e-9, atol=1e-12, err_msg=field)
    if min(harmful, benign) >= 20:  # smaller sets in 6 dimensions can saturate
        assert 0.5 < got[1].auroc < 1.0 and 0.5 < got[1].auroc_in_sample < 1.0  # graded, so fold choices show


def test_layer_scores_refuse_one_class_and_auroc_rows_handle_the_smallest_rows() -> None:
    acts = _graded(6, 0)
    with pytest.raises(ValueError, match="^layer scores need both harmful and benign records$"):
        layer_scores(acts)
    with pytest.raises(ValueError, match="^layer scores need both harmful and benign records$"):
        layer_scores(Activations(acts.values, ["benign"] * 6, acts.sources, acts.prompts))
    labels = np.array([[1, 0], [0, 1], [1, 1], [1, 0]])
    scores = np.array([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(auroc_rows(scores, labels), [1.0, 0.0, 0.0, 0.5])  # one class: 0 by convention
