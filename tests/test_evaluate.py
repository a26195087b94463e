"""The fair champion comparison and the bootstrap intervals behind the promotion gate."""

import numpy as np
import pytest

from components.model.evaluate import (
    MIN_COMPARISON_ROWS,
    _weighted_metric,
    bootstrap_interval,
    compare_with_champion,
    metric_value,
)
from components.model.lineage import hash_ids


def _scores(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = (rng.random(rows) < 0.27).astype(int)
    probability = np.clip(0.25 + 0.35 * (label - 0.27) + rng.normal(0, 0.2, rows), 0, 1)
    ids = np.array([f"C{seed}-{i:05d}" for i in range(rows)])
    return label, np.round(probability, 3), ids  # rounded: ties, as real scores have


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "f1"])
def test_the_bootstrap_scores_each_resample_as_scikit_learn_would(metric: str):
    label, probability, _ = _scores(400, 1)
    rng = np.random.default_rng(2)
    resamples = rng.integers(0, len(label), size=(6, len(label)))
    counts = np.stack([np.bincount(r, minlength=len(label)) for r in resamples])
    expected = [metric_value(metric, label[r], probability[r], 0.3) for r in resamples]
    np.testing.assert_allclose(_weighted_metric(metric, label, probability, 0.3, counts), expected)


def test_intervals_cover_the_metric_and_a_model_against_itself_differs_by_nothing():
    label, probability, _ = _scores(3_000, 3)
    low, high = bootstrap_interval("roc_auc", label, probability, 0.3, samples=500, seed=0)
    assert low < metric_value("roc_auc", label, probability, 0.3) < high
    assert 0.01 < high - low < 0.08
    same = bootstrap_interval(
        "roc_auc", label, probability, 0.3, samples=200, seed=0, baseline=(probability, 0.3)
    )
    assert same == [0.0, 0.0]
    assert bootstrap_interval("roc_auc", label, probability, 0.3, samples=0, seed=0) is None


def test_a_champion_that_trained_on_this_weeks_test_customers_is_compared_on_the_others():
    label, probability, ids = _scores(2_000, 4)
    rng = np.random.default_rng(5)
    # The champion memorised the first 1,200 test customers: perfect scores on them.
    champion = np.where(np.arange(2_000) < 1_200, label.astype(float), probability[::-1])
    comparison = compare_with_champion(
        metric="roc_auc",
        label=label,
        customer_ids=ids,
        probability=probability,
        threshold=0.3,
        champion_probability=champion,
        champion_threshold=0.5,
        champion_training_customers=np.unique(
            np.r_[hash_ids(ids[:1_200]), hash_ids(rng.integers(0, 10**6, 50))]
        ),
        samples=300,
        seed=0,
    )
    others = slice(1_200, None)
    assert comparison["rows"] == 800 and comparison["test_rows"] == 2_000
    assert comparison["champion_trained_on"] == 1_200 and comparison["unseen_only"]
    assert comparison["champion"] == metric_value("roc_auc", label[others], champion[others], 0.5)
    assert comparison["candidate"] == metric_value(
        "roc_auc", label[others], probability[others], 0.3
    )
    assert comparison["difference_interval"][0] > 0  # the memoriser is no better elsewhere
    assert comparison["note"] == "on the 800 of 2,000 test customers the champion never trained on"
    assert comparison["champion_metrics"]["roc_auc"] == comparison["champion"]


def test_too_few_unseen_customers_is_said_and_the_gate_still_has_rows():
    label, probability, ids = _scores(1_000, 6)
    unseen = int(np.flatnonzero(label)[0]), int(np.flatnonzero(label == 0)[0])
    trained = np.delete(ids, unseen)[: 1_000 - 2]
    common = dict(
        metric="roc_auc",
        label=label,
        customer_ids=ids,
        probability=probability,
        threshold=0.3,
        champion_probability=probability,
        champion_threshold=0.3,
        samples=100,
        seed=0,
    )
    thin = compare_with_champion(**common, champion_training_customers=hash_ids(trained))
    assert thin["rows"] == 2 and thin["unseen_only"]
    assert f"fewer than {MIN_COMPARISON_ROWS:,}: a thin comparison" in thin["note"]
    one_class_left = hash_ids(np.delete(ids, unseen[0]))
    flattered = compare_with_champion(**common, champion_training_customers=one_class_left)
    assert flattered["rows"] == 1_000 and not flattered["unseen_only"]
    assert "too few to score, so its score is flattered" in flattered["note"]
    unknown = compare_with_champion(**common, champion_training_customers=None)
    assert unknown["rows"] == 1_000 and "not recorded" in unknown["note"]


def test_the_interval_widens_with_copies_when_the_bootstrap_resamples_groups():
    label, probability, _ = _scores(1_000, 7)
    alone = bootstrap_interval("roc_auc", label, probability, 0.3, samples=400, seed=0)
    # Each customer profile four times, under fresh ids: no more information than once.
    copies = np.repeat(np.arange(1_000), 4)
    as_rows = bootstrap_interval(
        "roc_auc", label[copies], probability[copies], 0.3, samples=400, seed=0
    )
    as_groups = bootstrap_interval(
        "roc_auc", label[copies], probability[copies], 0.3, samples=400, seed=0, groups=copies
    )

    def width(interval: list[float]) -> float:
        return interval[1] - interval[0]

    assert width(as_rows) < 0.6 * width(alone)  # too narrow: copies counted as evidence
    assert width(as_groups) > 1.7 * width(as_rows)
    assert width(as_groups) == pytest.approx(width(alone), rel=0.2)
    # The paired difference resamples the same groups.
    other = np.clip(probability + np.random.default_rng(8).normal(0, 0.1, 1_000), 0, 1)
    paired = [
        bootstrap_interval(
            "roc_auc", label[copies], probability[copies], 0.3, samples=400, seed=0,
            baseline=(other[copies], 0.3), groups=by,
        )
        for by in (None, copies)
    ]  # fmt: skip
    assert width(paired[1]) > 1.7 * width(paired[0])
