"""The promotion rule: decided by the paired difference's interval, not by a point
estimate against a margin, and saying which rule decided, on how many customers, with
what interval."""

import pytest

from components.errors import SettingsError
from components.model.register import decide_promotion
from components.settings import Settings

NOTE = "on all 4,213 test customers, none of whom the champion trained on"


def _decide(low: float, high: float, **rule) -> object:
    return decide_promotion(
        metric="roc_auc",
        candidate=0.840,
        champion=0.842,
        margin=0.002,
        floor=0.7,
        candidate_on_champion_rows=0.841,
        difference_interval=[low, high],
        comparison=NOTE,
        rows=4_213,
        **rule,
    )


def test_non_inferiority_replaces_the_champion_unless_it_may_be_worse_than_the_tolerance():
    kept = _decide(-0.004, 0.002)
    assert kept.promote
    assert kept.reason.startswith(
        "non-inferiority (tolerance 0.0050): roc_auc 0.8410 against the champion's 0.8420, "
        f"difference -0.0010 with 95% CI -0.0040 to +0.0020, lies above -0.0050; {NOTE}"
    )
    assert not _decide(-0.006, 0.004).promote  # could be worse by more than 0.005
    assert _decide(-0.009, 0.001, tolerance=0.01).promote
    # A point estimate 0.001 below the champion, which the margin rule refused.
    assert not _decide(-0.004, 0.002, rule="margin").promote


def test_superiority_needs_the_interval_above_zero():
    assert not _decide(-0.001, 0.006, rule="superiority").promote
    assert _decide(0.001, 0.006, rule="superiority").promote
    legacy = _decide(-0.001, 0.006, require_significance=True)  # the older setting
    assert not legacy.promote and legacy.reason.startswith("superiority: ")
    assert "(it does not exclude zero)" in legacy.reason


def test_without_an_interval_the_margin_decides_and_says_why():
    decision = decide_promotion(
        metric="roc_auc", candidate=0.85, champion=0.84, margin=0.002, floor=0.7, rows=900
    )
    assert decision.promote
    assert decision.reason.endswith("(non-inferiority needs the difference's bootstrap interval)")


def test_the_rule_and_tolerance_are_checked_settings():
    assert Settings().promotion_rule == "non_inferiority"
    with pytest.raises(SettingsError, match="promotion_rule"):
        Settings(promotion_rule="best_guess")
    with pytest.raises(SettingsError, match="promotion_tolerance"):
        Settings(promotion_tolerance=0.2)
