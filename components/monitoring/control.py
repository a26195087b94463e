"""Offer effectiveness: a control group inside the `high` tier, and what the offers did.

A retention offer's effect can only be measured against customers who were as likely to
churn and got no offer. So, when `control_share` is set, that share of each day's `high`
tier is marked `treatment_group = "control"` (the team leaves them out of the offers); the
rest of the tier is `"offer"`; customers outside the tier have no group. Who is in the
control group is decided by a salted hash of the customer id, not by chance per run: a
customer stays in it every day of a campaign (while `control_salt` stays), so nobody is
offered one day and held back the next.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

CONTROL = "control"
OFFER = "offer"
_Z95 = 1.959963984540054


def in_control_group(customer_ids: Iterable[str], *, share: float, salt: str) -> np.ndarray:
    """Whether each customer falls in the control group of a campaign: the first 8 bytes
    of SHA-256(`salt`:id), read as a number in [0, 1), under `share`. Stable across runs,
    machines and library versions."""
    ids = list(customer_ids)
    if share <= 0:
        return np.zeros(len(ids), dtype=bool)
    prefix = f"{salt}:".encode()
    draws = np.fromiter(
        (int.from_bytes(hashlib.sha256(prefix + str(i).encode()).digest()[:8], "big") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )
    return draws < np.uint64(min(share, 1.0) * 2**64 - 1)


def treatment_groups(
    customer_ids: Iterable[str], tiers: Iterable[str], *, share: float, salt: str
) -> np.ndarray:
    """`"control"` or `"offer"` for each customer in the `high` tier, `None` for the rest;
    with `share` 0 (no control group, so no offer effect to measure) `None` for everyone.
    Only the tier's ids are hashed."""
    ids = np.asarray(list(customer_ids), dtype=object)
    groups = np.full(len(ids), None, dtype=object)
    if share <= 0:
        return groups
    high = np.asarray(list(tiers), dtype=object) == "high"
    control = in_control_group(ids[high], share=share, salt=salt)
    groups[high] = np.where(control, CONTROL, OFFER)
    return groups


def offer_effect(groups: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """What the offers did, from the labelled customers of the `high` tier (`labels` 1
    churned, 0 stayed, -1 no outcome): churn rate of offered and control customers, the
    difference (control minus offered: churners the offers kept, as a share of those
    offered) with its 95% interval (normal approximation of two independent proportions),
    and customers kept per 100 offers. NaN where a group has no labelled customer."""
    groups = np.asarray(groups, dtype=object)
    known = np.asarray(labels) >= 0
    counts = {}
    for name in (OFFER, CONTROL):
        member = known & (groups == name)
        counts[name] = (int(member.sum()), int((np.asarray(labels)[member] == 1).sum()))
    (n_offer, churn_offer), (n_control, churn_control) = counts[OFFER], counts[CONTROL]
    result = {
        "offered": n_offer,
        "control": n_control,
        "offered_churn_rate": churn_offer / n_offer if n_offer else math.nan,
        "control_churn_rate": churn_control / n_control if n_control else math.nan,
    }
    difference = result["control_churn_rate"] - result["offered_churn_rate"]
    if n_offer and n_control:
        a, b = result["offered_churn_rate"], result["control_churn_rate"]
        error = math.sqrt(a * (1 - a) / n_offer + b * (1 - b) / n_control)
    else:
        error = math.nan
    result |= {
        "effect": difference,
        "effect_low": difference - _Z95 * error,
        "effect_high": difference + _Z95 * error,
        "kept_per_100_offers": 100 * difference,
    }
    return result


def offer_effect_by_date(
    predictions: pd.DataFrame, labels: np.ndarray, closed: Iterable
) -> pd.DataFrame:
    """`offer_effect` for each closed scoring date, then for all of them together (the
    row whose `as_of_date` is None): the pooled figure is the one to act on, a day's
    control group is small."""
    if "treatment_group" not in predictions:
        return pd.DataFrame()
    as_of = pd.to_datetime(predictions["as_of_date"]).dt.date.to_numpy()
    groups = predictions["treatment_group"].to_numpy(dtype=object)
    closed = sorted(set(closed))
    rows = []
    for day in closed:
        member = as_of == day
        rows.append({"as_of_date": day} | offer_effect(groups[member], labels[member]))
    pooled = np.isin(as_of, closed)
    rows.append({"as_of_date": None} | offer_effect(groups[pooled], labels[pooled]))
    return pd.DataFrame(rows)
