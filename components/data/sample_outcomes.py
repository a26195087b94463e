"""Seeded outcomes for the sample data: which scored customers churned, and when.

The monitoring pipeline compares scores with what happened. Real outcomes take a whole
outcome window to arrive; these are drawn from the generator's own churn probabilities
(`sample_data.churn_probabilities`), so a calibrated model's scores and the outcomes agree
as they would for a model that learned the real thing, and the whole loop runs on a laptop.
Two things can be injected, each a known truth a test or a demo can recover:

- an **offer effect**: customers offered a retention deal (`treatment_group` "offer")
  churn with their probability times `1 - offer_effect`;
- a **drift**: from `drift_start` on, customers are drawn from a mix that leans to likely
  churners (`daily_customers(shifted=True)`: the scores' distribution moves) and their
  behaviour stops following their profile (`generate_outcomes`: part of each customer's
  churn probability is another customer's, so the model ranks them worse).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from components.contract import OUTCOME_COLUMNS, TELCO_CHURN
from components.data.sample_data import churn_probabilities, generate_customers

__all__ = ["daily_customers", "generate_outcomes"]

# A shifted day draws this many candidates per customer it keeps.
_SHIFT_POOL = 3


def daily_customers(
    n_rows: int, seed: int, day: int, *, shifted: bool = False
) -> tuple[pd.DataFrame, pd.Series]:
    """The (clean) customers to score on day `day` and their true churn probabilities by
    customer id: a fresh seeded draw per day. With `shifted`, the day's customers are
    `n_rows` of three times as many, drawn with weights that grow with their churn
    probability: the mix of customers moves (more month-to-month, fibre, short tenure)
    while each customer's probability stays what the generator says it is."""
    day_seed = (seed * 1_000_003 + day) % 2**32
    if not shifted:
        frame = generate_customers(n_rows, seed=day_seed, messy=False)
        truth = churn_probabilities(n_rows, seed=day_seed)
    else:
        pool = generate_customers(_SHIFT_POOL * n_rows, seed=day_seed, messy=False)
        pool_truth = churn_probabilities(_SHIFT_POOL * n_rows, seed=day_seed)
        weights = pool_truth + 0.02
        rng = np.random.default_rng(day_seed)
        keep = np.sort(rng.choice(len(pool), n_rows, replace=False, p=weights / weights.sum()))
        frame = pool.iloc[keep].reset_index(drop=True)
        truth = pool_truth[keep]
    ids = frame[TELCO_CHURN.id_column].to_numpy()
    return frame, pd.Series(truth, index=pd.Index(ids, name="customer_id"), name="probability")


def generate_outcomes(
    predictions: pd.DataFrame,
    probabilities: pd.Series,
    *,
    window_days: int,
    seed: int = 0,
    offer_effect: float = 0.0,
    drift_start: date | None = None,
    drift_mix: float = 0.8,
    missing_share: float = 0.01,
) -> pd.DataFrame:
    """One outcome row per scored customer in `predictions` (`customer_id`, `as_of_date`
    and, for an offer effect, `treatment_group`): `churned` with the customer's probability
    in `probabilities` (by customer id), observed on a day within the `window_days` after
    the scoring date; otherwise not churned, observed at the window's end. A
    `missing_share` of customers gets no row (customers whose outcome never arrived).

    `offer_effect` (0 to 1): offered customers' probability is multiplied by
    `1 - offer_effect`. From `drift_start` on, each customer's probability is
    `1 - drift_mix` of their own and `drift_mix` of another customer's of the same day.
    The same arguments always give the same rows."""
    if not 0 <= offer_effect <= 1:
        raise ValueError(f"offer_effect must be between 0 and 1, got {offer_effect}")
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    rng = np.random.default_rng(seed)
    ids = predictions["customer_id"].to_numpy()
    as_of = pd.to_datetime(predictions["as_of_date"]).dt.date.to_numpy()
    p = probabilities.reindex(ids).to_numpy(dtype=float, copy=True)
    if np.isnan(p).any():
        missing = ids[np.isnan(p)][:3]
        raise ValueError(f"no churn probability for customer(s) {', '.join(map(str, missing))}")
    if drift_start is not None:
        for day in sorted({d for d in as_of if d >= drift_start}):
            rows = np.flatnonzero(as_of == day)
            p[rows] = (1 - drift_mix) * p[rows] + drift_mix * p[rng.permutation(rows)]
    if offer_effect and "treatment_group" in predictions:
        offered = (predictions["treatment_group"] == "offer").to_numpy()
        p[offered] *= 1 - offer_effect
    churned = rng.random(len(p)) < p
    delay = np.where(churned, rng.integers(1, window_days + 1, len(p)), window_days)
    observed = [day + timedelta(days=int(d)) for day, d in zip(as_of, delay, strict=True)]
    kept = rng.random(len(p)) >= missing_share
    columns = dict(zip(OUTCOME_COLUMNS, (ids, churned, observed), strict=True))
    return pd.DataFrame(columns).loc[kept].reset_index(drop=True)
