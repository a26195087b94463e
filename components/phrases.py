"""How each reason reads to a call-centre agent: one short phrase per feature and value.

This table sits beside the data contract (`components/contract.py`): a team whose customer
table has other columns edits both, and nothing else. Per feature, either
- a template for numbers, `{value}` being the customer's value (any format spec works:
  `{value:.0f}`), with `{s}` an "s" unless the value is 1, or
- a phrase per category value.
A feature or category missing here reads as "feature: value"; a missing value as
"feature not known".
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Phrase = str | Mapping[str, str]

_SERVICE = {"Yes": "has {feature}", "No": "no {feature}", "No internet service": "no internet"}

PHRASES: dict[str, Phrase] = {
    "gender": {"Female": "female", "Male": "male"},
    "SeniorCitizen": {"1": "senior citizen", "0": "not a senior citizen"},
    "Partner": {"Yes": "has a partner", "No": "no partner"},
    "Dependents": {"Yes": "has dependants", "No": "no dependants"},
    "tenure": "tenure {value:.0f} month{s}",
    "PhoneService": {"Yes": "phone service", "No": "no phone service"},
    "MultipleLines": {
        "Yes": "multiple lines",
        "No": "a single line",
        "No phone service": "no phone service",
    },
    "InternetService": {
        "DSL": "DSL internet",
        "Fiber optic": "fibre internet",
        "No": "no internet",
    },
    "OnlineSecurity": {k: v.format(feature="online security") for k, v in _SERVICE.items()},
    "OnlineBackup": {k: v.format(feature="online backup") for k, v in _SERVICE.items()},
    "DeviceProtection": {k: v.format(feature="device protection") for k, v in _SERVICE.items()},
    "TechSupport": {k: v.format(feature="tech support") for k, v in _SERVICE.items()},
    "StreamingTV": {k: v.format(feature="streaming TV") for k, v in _SERVICE.items()},
    "StreamingMovies": {k: v.format(feature="streaming movies") for k, v in _SERVICE.items()},
    "Contract": {
        "Month-to-month": "month-to-month contract",
        "One year": "one-year contract",
        "Two year": "two-year contract",
    },
    "PaperlessBilling": {"Yes": "paperless billing", "No": "paper bills"},
    "PaymentMethod": {
        "Electronic check": "pays by electronic check",
        "Mailed check": "pays by mailed check",
        "Bank transfer (automatic)": "pays by bank transfer",
        "Credit card (automatic)": "pays by credit card",
    },
    "MonthlyCharges": "monthly charges ${value:.0f}",
    "TotalCharges": "total charges ${value:,.0f}",
}


def value_text(value: object) -> str | None:
    """A feature value as the predictions table holds it (`reason_1_value`): numbers
    without a needless ".0", text as it is, a missing value as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    if hasattr(value, "item"):  # a numpy scalar
        return value_text(value.item())
    return str(value)


def phrase(feature: str, value: object, phrases: Mapping[str, Phrase] = PHRASES) -> str:
    """One short phrase for a customer's value of `feature`."""
    text = value_text(value)
    if text is None:
        return f"{feature} not known"
    entry = phrases.get(feature)
    if isinstance(entry, Mapping):
        return entry.get(text, f"{feature}: {text}")
    if isinstance(entry, str):
        try:
            number = float(text)
        except ValueError:
            return f"{feature}: {text}"
        return entry.format(value=number, s="" if number == 1 else "s")
    return f"{feature}: {text}"
