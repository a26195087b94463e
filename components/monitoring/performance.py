"""Model performance per scoring date: realized once outcomes arrive, estimated before.

**Realized** (a scoring date whose outcome window has closed): each scored customer's label
is whether a churn was observed within `window_days` after the date; customers with no
outcome at all are counted (`no_outcome`), never guessed. Every metric comes with a
bootstrap 95% interval.

Customers offered a retention deal no longer churn as the model predicted (that is the
point of the offer), so they would make the model look worse than it is. When a control
group exists, realized performance is measured on the customers who got no offer, each
control customer standing in for `1 / control_share` of the tier (inverse-probability
weights): an unbiased view of what the model would have scored with no offers at all.
Without a control group every customer counts once, offered or not, and the figures
understate the model by the offers' effect.

**Estimated** (every date, outcomes or not): the probabilities are calibrated, so each
customer churns with their probability; the expected ROC-AUC is that of the scores against
labels `1` with weight `p` and `0` with weight `1 - p` (confidence-based performance
estimation), and the expected precision of the `high` tier is its mean probability. Once
outcomes arrive, `estimate_error` says how far off the estimate was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from components.errors import ContractError

# Realized metrics, each with `_low` and `_high` bounds of its bootstrap 95% interval.
REALIZED = (
    "roc_auc",
    "pr_auc",
    "brier",
    "calibration_error",
    "observed_churn",
    "high_precision",
    "high_recall",
    "top_lift",
)
# The `churn_performance` table, one row per scoring date, in this column order.
PERFORMANCE_COLUMNS = (
    "as_of_date",
    "model_version",
    "scored",
    "high",
    "expected_churn",
    "estimated_roc_auc",
    "estimated_high_precision",
    "outcome_closed",
    "labelled",
    "no_outcome",
    "churned",
    *(f"{m}{s}" for m in REALIZED for s in ("", "_low", "_high")),
    "estimate_error",
)
_CALIBRATION_BINS = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True)
class Scores:
    """One scoring date's customers: score, tier, bootstrap weight base and label."""

    probability: np.ndarray
    high: np.ndarray
    weight: np.ndarray
    label: np.ndarray  # 1 churned, 0 stayed, -1 no outcome


def outcome_labels(
    predictions: pd.DataFrame, outcomes: pd.DataFrame, *, window_days: int
) -> np.ndarray:
    """Per prediction row (`customer_id`, `as_of_date`): 1 when the outcomes hold a churn
    observed within `window_days` after the scoring date, 0 when they hold none but the
    customer was observed at or after the window's end, -1 (no outcome) otherwise."""
    scored = pd.DataFrame(
        {
            "row": np.arange(len(predictions)),
            "customer_id": predictions["customer_id"].to_numpy(),
            "start": pd.to_datetime(predictions["as_of_date"]).to_numpy(),
        }
    )
    seen = pd.DataFrame(
        {
            "customer_id": outcomes["customer_id"].to_numpy(),
            "churned": outcomes["churned"].to_numpy(dtype=bool),
            "observed": pd.to_datetime(outcomes["observed_date"]).to_numpy(),
        }
    )
    joined = scored.merge(seen, on="customer_id", how="inner")
    end = joined["start"] + pd.Timedelta(days=window_days)
    in_window = (joined["observed"] > joined["start"]) & (joined["observed"] <= end)
    churn_rows = joined.loc[in_window & joined["churned"], "row"].unique()
    stayed_rows = joined.loc[(joined["observed"] >= end) & ~joined["churned"], "row"].unique()
    labels = np.full(len(predictions), -1, dtype=np.int8)
    labels[stayed_rows] = 0
    labels[churn_rows] = 1
    return labels


def control_weights(groups: pd.Series | np.ndarray, high: np.ndarray) -> np.ndarray:
    """Weights that make the customers without an offer stand for the whole day: offered
    customers 0, control customers `1 / control_share` (the day's control share of the
    `high` tier), everyone else 1. With no control customers, every customer weighs 1."""
    groups = np.asarray(groups, dtype=object)
    control = groups == "control"
    offered = groups == "offer"
    if not control.any():
        return np.ones(len(groups))
    share = control[high].sum() / max((control | offered)[high].sum(), 1)
    return np.where(offered, 0.0, np.where(control, 1.0 / share, 1.0))


def estimated_roc_auc(probability: np.ndarray) -> float:
    """The ROC-AUC expected if each customer churns with their (calibrated) probability."""
    p = np.asarray(probability, dtype=float)
    if len(p) < 2:
        return math.nan
    (auc,) = _weighted_auc(p, p[None, :], (1 - p)[None, :])
    return float(auc)


def estimated_high_precision(probability: np.ndarray, high: np.ndarray) -> float:
    """The share of the `high` tier expected to churn: its mean probability."""
    return float(np.mean(probability[high])) if high.any() else math.nan


def realized_metrics(scores: Scores, *, top_n: int, samples: int, seed: int) -> dict[str, float]:
    """Realized metrics of the labelled customers, each with its bootstrap 95% interval
    (`samples` resamples; none: the bounds are NaN)."""
    known = scores.label >= 0
    p = scores.probability[known]
    y = scores.label[known].astype(float)
    high = scores.high[known]
    base = scores.weight[known]
    # The top N by score, as the team calling the day's top N customers would pick them.
    top = np.zeros(len(p), dtype=bool)
    top[np.argsort(-p, kind="stable")[: min(top_n, len(p))]] = True
    weights = np.vstack([base[None, :], _resample_counts(len(p), samples, seed) * base])
    values = _metrics(p, y, high, top, weights)
    result: dict[str, float] = {}
    for name, column in values.items():
        result[name] = float(column[0])
        rest = column[1:][np.isfinite(column[1:])]
        low, up = np.quantile(rest, [0.025, 0.975]) if len(rest) else (math.nan, math.nan)
        result[f"{name}_low"] = float(low)
        result[f"{name}_high"] = float(up)
    return result


def _resample_counts(n: int, samples: int, seed: int) -> np.ndarray:
    """How often each of `n` rows is drawn in each of `samples` bootstrap resamples."""
    if n == 0 or samples == 0:
        return np.zeros((0, n))
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, (samples, n)) + (np.arange(samples) * n)[:, None]
    return np.bincount(drawn.ravel(), minlength=samples * n).reshape(samples, n).astype(float)


def _metrics(
    p: np.ndarray, y: np.ndarray, high: np.ndarray, top: np.ndarray, w: np.ndarray
) -> dict[str, np.ndarray]:
    """Each metric for every row of weights `w` (resamples x customers) at once."""
    with np.errstate(invalid="ignore", divide="ignore"):
        total = w.sum(axis=1)
        churned = w @ y
        observed = churned / total
        in_high = w @ high
        churned_high = w @ (y * high)
        in_top = w @ top
        bins = np.clip(np.digitize(p, _CALIBRATION_BINS[1:-1]), 0, len(_CALIBRATION_BINS) - 2)
        gap = np.zeros(len(w))
        for b in np.unique(bins):
            member = bins == b
            gap += np.abs(w[:, member] @ (y[member] - p[member]))
        return {
            "roc_auc": _weighted_auc(p, w * y, w * (1 - y)),
            "pr_auc": _weighted_average_precision(p, w * y, w),
            "brier": (w @ (p - y) ** 2) / total,
            "calibration_error": gap / total,
            "observed_churn": observed,
            "high_precision": churned_high / in_high,
            "high_recall": churned_high / churned,
            "top_lift": ((w @ (y * top)) / in_top) / observed,
        }


def _groups(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order of `p` descending and the start of each run of tied scores in it."""
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    return order, starts


def _weighted_auc(p: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC-AUC per row of positive and negative weights: the weighted share of
    (positive, negative) pairs ranked right, ties counting half."""
    if len(p) == 0:
        return np.full(len(pos), math.nan)
    order, starts = _groups(p)
    pos_g = np.add.reduceat(pos[:, order], starts, axis=1)
    neg_g = np.add.reduceat(neg[:, order], starts, axis=1)
    # Groups in descending score order: negatives ranked below a group come after it.
    neg_below = neg_g.sum(axis=1, keepdims=True) - np.cumsum(neg_g, axis=1)
    right = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return right / (pos.sum(axis=1) * neg.sum(axis=1))


def _weighted_average_precision(p: np.ndarray, pos: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision (area under the precision-recall curve, as scikit-learn's
    `average_precision_score`) per row of weights."""
    if len(p) == 0:
        return np.full(len(pos), math.nan)
    order, starts = _groups(p)
    pos_g = np.add.reduceat(pos[:, order], starts, axis=1)
    all_g = np.add.reduceat(w[:, order], starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.cumsum(pos_g, axis=1) / np.cumsum(all_g, axis=1)
        return np.nansum(pos_g * precision, axis=1) / pos.sum(axis=1)


def performance_rows(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    *,
    today: date,
    window_days: int,
    top_n: int,
    samples: int,
    seed: int,
) -> pd.DataFrame:
    """One row per scoring date in `predictions` (columns `PERFORMANCE_COLUMNS`): the
    estimate for every date, realized metrics and the estimate's error where the outcome
    window closed by `today`. The same inputs give the same rows (a re-run changes
    nothing): each date's bootstrap is seeded by `seed` and the date."""
    required = {"customer_id", "churn_probability", "risk_tier", "as_of_date", "model_version"}
    missing = sorted(required - set(predictions.columns))
    if missing:
        raise ContractError(f"predictions lack column(s) {', '.join(missing)}")
    as_of = pd.to_datetime(predictions["as_of_date"]).dt.date
    groups = (
        predictions["treatment_group"]
        if "treatment_group" in predictions
        else pd.Series([None] * len(predictions), index=predictions.index)
    )
    labels = (
        outcome_labels(predictions, outcomes, window_days=window_days)
        if outcomes is not None
        else np.full(len(predictions), -1, dtype=np.int8)
    )
    rows = []
    for day in sorted(as_of.unique()):
        member = (as_of == day).to_numpy()
        day_rows = predictions.loc[member]
        p = day_rows["churn_probability"].to_numpy(dtype=float)
        high = (day_rows["risk_tier"] == "high").to_numpy()
        row: dict[str, object] = {
            "as_of_date": day,
            "model_version": int(day_rows["model_version"].max()),
            "scored": int(member.sum()),
            "high": int(high.sum()),
            "expected_churn": float(p.mean()),
            "estimated_roc_auc": estimated_roc_auc(p),
            "estimated_high_precision": estimated_high_precision(p, high),
            "outcome_closed": day + timedelta(days=window_days) <= today,
        }
        label = labels[member]
        if row["outcome_closed"]:
            scores = Scores(p, high, control_weights(groups[member].to_numpy(), high), label)
            row["labelled"] = int((label >= 0).sum())
            row["no_outcome"] = int((label < 0).sum())
            row["churned"] = int((label == 1).sum())
            day_seed = (seed * 100_003 + day.toordinal()) % 2**32
            row |= realized_metrics(scores, top_n=top_n, samples=samples, seed=day_seed)
            row["estimate_error"] = row["estimated_roc_auc"] - row["roc_auc"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(PERFORMANCE_COLUMNS))
    for name in ("labelled", "no_outcome", "churned"):
        frame[name] = frame[name].astype("Int64")
    return frame
