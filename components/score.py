"""Scoring: churn probability, the model's yes/no call and a risk tier per customer."""

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from components.contract import TELCO_CHURN, DataContract

RISK_TIERS = ("high", "medium", "low")


def risk_tier(probability: np.ndarray, *, high: float, medium: float) -> np.ndarray:
    """`high` from the `high` cut-off up, `medium` from `medium` up, else `low`."""
    return np.select([probability >= high, probability >= medium], RISK_TIERS[:2], RISK_TIERS[2])


def score_frame(
    model: Pipeline,
    frame: pd.DataFrame,
    *,
    threshold: float,
    high: float,
    medium: float,
    contract: DataContract = TELCO_CHURN,
) -> pd.DataFrame:
    """Score validated rows: one output row per input row, in order, with `customer_id`,
    `churn_probability`, `churn_predicted` (at the model's threshold) and `risk_tier`."""
    probability = model.predict_proba(frame[contract.feature_names])[:, 1]
    return pd.DataFrame(
        {
            "customer_id": frame[contract.id_column].to_numpy(),
            "churn_probability": probability,
            "churn_predicted": probability >= threshold,
            "risk_tier": risk_tier(probability, high=high, medium=medium),
        }
    )
