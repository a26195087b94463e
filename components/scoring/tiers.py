"""Risk tiers: a customer's churn probability, the model's yes/no call and a tier by cut-off.
The tier and the call agree: a customer the model flags is never `low`.

What one scored frame holds, whoever scores it: batch scoring (`chunked`, the batch
prediction path) and the model server (`components.serving.server`).
"""

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components.contract import TELCO_CHURN, DataContract

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


RISK_TIERS = ("high", "medium", "low")


def risk_tier(
    probability: np.ndarray,
    *,
    high: float,
    medium: float,
    threshold: float,
    top: np.ndarray | None = None,
) -> pd.Categorical:
    """`high` from the `high` cut-off up, `medium` from `medium` up, else `low`, agreeing
    with the model's yes/no call at `threshold`: a flagged customer (probability at or
    above the threshold) is never `low` (`medium` starts at the lower of the cut-off and
    the threshold), and an unflagged one never `high` (`high` starts at the higher of the
    two). With `top` (capacity tiers: the day's most likely churners) `high` is exactly
    the rows `top` marks, whatever the cut-offs."""
    is_high = probability >= max(high, threshold) if top is None else top
    tier = np.select([is_high, probability >= min(medium, threshold)], [0, 1], 2)
    return pd.Categorical.from_codes(tier, categories=RISK_TIERS)


def score_frame(
    model: "Pipeline",
    frame: pd.DataFrame,
    *,
    threshold: float,
    high: float,
    medium: float,
    contract: DataContract = TELCO_CHURN,
    reasons_for: str | float = "none",
) -> pd.DataFrame:
    """Score validated rows: one output row per input row, in order, with `customer_id`,
    `churn_probability`, `churn_predicted` (at the model's threshold) and `risk_tier`;
    no rows give the same columns, empty (a chunk of only rejects). With `reasons_for`
    other than `none`, the reason columns follow (`components.scoring.reason_codes`)."""
    # `reasons_for`: `high_medium`, `all`, `none`, or a minimum probability (serving's).
    from components.model.predict import predict_probability, preprocess

    # Rows with reasons need the preprocessed matrix too: made once for both.
    x = preprocess(model, frame, contract) if reasons_for != "none" and len(frame) else None
    # Estimators refuse zero rows.
    probability = (
        predict_probability(model, frame, contract, preprocessed=x) if len(frame) else np.empty(0)
    )
    scored = pd.DataFrame(
        {
            "customer_id": frame[contract.id_column].array,
            "churn_probability": probability,
            "churn_predicted": probability >= threshold,
            "risk_tier": risk_tier(probability, high=high, medium=medium, threshold=threshold),
        }
    )
    if reasons_for == "none":
        return scored
    from components.scoring.reason_codes import reason_frame, selected

    rows = selected(scored["risk_tier"].array, probability, reasons_for)
    reasons = reason_frame(model, frame, probability, rows, contract, preprocessed=x)
    return pd.concat([scored, reasons.set_axis(scored.index)], axis=1)
