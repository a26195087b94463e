"""The monitoring run's steps: measure (performance, drift of the scores, offers) and
alert. Each step is a thin wrapper over the plain functions of this package.

What a measurement holds (`measure`), one entry per scoring date in `days`: the day's
tier counts and expected churn, the score PSI against the champion's training data, the
row of the `churn_performance` table, and the offer effect; plus the offer effect over all
closed dates together (`offers`), and whether a retraining is due.
"""

import math
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Artifact, Input, Metrics, Output

from components.monitoring.drift import SCORE, ReferenceProfile, population_stability_index
from components.stage import stage

_PREDICTION_COLUMNS = (
    "customer_id",
    "churn_probability",
    "risk_tier",
    "as_of_date",
    "model_version",
)


def score_psi(predictions: pd.DataFrame, profile: ReferenceProfile | None) -> dict[date, float]:
    """PSI of each scoring date's churn probabilities against the champion's training data
    (the reference profile's score buckets); empty without a profile."""
    if profile is None:
        return {}
    buckets = next((b for b in profile.buckets if b.name == SCORE), None)
    if buckets is None:
        return {}
    reference = np.asarray(profile.shares[SCORE], dtype=float)
    as_of = pd.to_datetime(predictions["as_of_date"]).dt.date
    return {
        day: population_stability_index(reference, buckets.count(rows.to_numpy(dtype=float)))
        for day, rows in predictions["churn_probability"].groupby(as_of)
    }


def measure(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    profile: ReferenceProfile | None,
    *,
    today: date,
    window_days: int,
    top_n: int,
    samples: int,
    seed: int,
    promotion_floor: float,
    retrain_below_floor: int,
    retrain_windows: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The `churn_performance` rows of every scoring date up to `today`, and the
    measurement (JSON-ready) the alerts and the trend page read."""
    from components.monitoring.alerts import retrain_due
    from components.monitoring.control import offer_effect_by_date
    from components.monitoring.performance import outcome_labels, performance_rows

    as_of = pd.to_datetime(predictions["as_of_date"]).dt.date
    predictions = predictions.loc[(as_of <= today).to_numpy()].reset_index(drop=True)
    performance = performance_rows(
        predictions, outcomes, today=today, window_days=window_days, top_n=top_n,
        samples=samples, seed=seed,
    )  # fmt: skip
    psi = score_psi(predictions, profile)
    tiers = (
        predictions.groupby([pd.to_datetime(predictions["as_of_date"]).dt.date, "risk_tier"])
        .size()
        .unstack(fill_value=0)
    )
    labels = (
        outcome_labels(predictions, outcomes, window_days=window_days)
        if outcomes is not None
        else np.full(len(predictions), -1)
    )
    closed = performance.loc[performance["outcome_closed"], "as_of_date"].tolist()
    offers = offer_effect_by_date(predictions, labels, closed)
    by_day = {} if offers.empty else {r["as_of_date"]: r for r in offers.to_dict("records")}
    days = []
    for row in performance.to_dict("records"):
        day = row["as_of_date"]
        days.append(
            {
                **{k: _plain(v) for k, v in row.items()},
                "as_of_date": day.isoformat(),
                "score_psi": _plain(psi.get(day, math.nan)),
                "tiers": {t: int(tiers.loc[day].get(t, 0)) for t in ("high", "medium", "low")},
                "offers": {
                    k: _plain(v) for k, v in by_day.get(day, {}).items() if k != "as_of_date"
                },
            }
        )
    pooled = by_day.get(None, {})
    result = {
        "today": today.isoformat(),
        "digest": _digest_counts(predictions, today),
        "days": days,
        "offers": {k: _plain(v) for k, v in pooled.items() if k != "as_of_date"},
        "retrain_due": retrain_due(
            performance, floor=promotion_floor, below=retrain_below_floor, windows=retrain_windows
        ),
    }
    return performance, result


def _digest_counts(predictions: pd.DataFrame, today: date) -> dict[str, Any]:
    """What the daily digest says of `today`: whether it was scored, its `high` count, the
    ids that entered the tier since the previous scoring date, its control count."""
    as_of = pd.to_datetime(predictions["as_of_date"]).dt.date
    high = predictions["risk_tier"] == "high"
    today_rows = as_of == today
    earlier = sorted(d for d in as_of.unique() if d < today)
    before = (
        set(predictions.loc[high & (as_of == earlier[-1]), "customer_id"]) if earlier else set()
    )
    now = predictions.loc[high & today_rows, "customer_id"].astype(str)
    control = 0
    if "treatment_group" in predictions:
        control = int((predictions.loc[today_rows, "treatment_group"] == "control").sum())
    return {
        "scored": bool(today_rows.any()),
        "high": len(now),
        "entered": sorted(set(now) - set(map(str, before))),
        "control": control,
    }


def _plain(value: Any) -> Any:
    """A JSON value: NaN and missing become None, numpy numbers Python ones."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else round(float(value), 6)
    if isinstance(value, date):
        return value.isoformat()
    return value


def performance_frame(days: list[dict[str, Any]]) -> pd.DataFrame:
    """The `churn_performance` rows back from a measurement's `days`."""
    from components.monitoring.performance import PERFORMANCE_COLUMNS

    frame = pd.DataFrame(days, columns=list(PERFORMANCE_COLUMNS))
    frame["as_of_date"] = pd.to_datetime(frame["as_of_date"]).dt.date
    return frame


def measure_and_write(
    *,
    registry_uri: str,
    model_ref: str,
    predictions_uri: str,
    outcomes_uri: str,
    today: date,
    window_days: int,
    top_n: int,
    samples: int,
    seed: int,
    promotion_floor: float,
    retrain_below_floor: int,
    retrain_windows: int,
) -> dict[str, Any]:
    """Step 1's work: read the champion's profile, the predictions and the outcomes,
    measure, replace each date's row of the `churn_performance` table; return the
    measurement."""
    import tempfile
    from pathlib import Path

    from components.monitoring.drift import load_profile
    from components.monitoring.tables import performance_uri, read_outcomes, write_performance
    from components.registry import open_registry
    from components.warehouse import read_table

    with tempfile.TemporaryDirectory(prefix="churn-champion-") as scratch:
        entry = open_registry(registry_uri).fetch(model_ref, Path(scratch) / "model")
        profile = load_profile(Path(scratch) / "model")
    predictions = read_table(predictions_uri)
    wanted = [*_PREDICTION_COLUMNS, "treatment_group"]
    predictions = predictions[[c for c in wanted if c in predictions.columns]]
    performance, result = measure(
        predictions,
        read_outcomes(outcomes_uri),
        profile,
        today=today,
        window_days=window_days,
        top_n=top_n,
        samples=samples,
        seed=seed,
        promotion_floor=promotion_floor,
        retrain_below_floor=retrain_below_floor,
        retrain_windows=retrain_windows,
    )
    output = performance_uri(predictions_uri)
    write_performance(performance, output)
    return result | {
        "performance_output": output,
        "predictions": predictions_uri,
        "model_version": entry.version,
        "test_roc_auc": entry.metrics.get("roc_auc"),
    }


@stage
def measure_performance(
    registry_uri: str,
    model_ref: str,
    predictions_uri: str,
    outcomes_uri: str,
    as_of: str,
    time_zone: str,
    outcome_window_days: int,
    lift_top_n: int,
    bootstrap_samples: int,
    seed: int,
    promotion_floor: float,
    retrain_below_floor: int,
    retrain_windows: int,
    measured: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    """Realized and estimated performance per scoring date (written to the
    `churn_performance` table beside the predictions, one row per date), score drift per
    date against the champion, and the offer effect; the whole measurement as JSON.
    Returns whether a retraining is due (the pipeline's step 4 is gated on it)."""
    import json
    from pathlib import Path

    from components.dates import resolve_as_of
    from components.monitoring.monitor import measure_and_write

    result = measure_and_write(
        registry_uri=registry_uri,
        model_ref=model_ref,
        predictions_uri=predictions_uri,
        outcomes_uri=outcomes_uri,
        today=resolve_as_of(as_of, time_zone=time_zone),
        window_days=outcome_window_days,
        top_n=lift_top_n,
        samples=bootstrap_samples,
        seed=seed,
        promotion_floor=promotion_floor,
        retrain_below_floor=retrain_below_floor,
        retrain_windows=retrain_windows,
    )
    Path(measured.path).write_text(json.dumps(result, indent=2))
    measured.metadata.update({"today": result["today"], "dates": len(result["days"])})
    if result["days"]:
        latest = result["days"][-1]
        metrics.log_metric("estimated_roc_auc", latest["estimated_roc_auc"] or 0.0)
        metrics.log_metric("score_psi", latest["score_psi"] or 0.0)
    return bool(result["retrain_due"])


@stage
def send_alerts(
    measured: Input[Artifact],
    report: Input[Artifact],
    as_of: str,
    time_zone: str,
    scores_deadline: str,
    drift_threshold: float,
    promotion_floor: float,
    high_tier_limit: int,
    alert_email_to: str,
    alert_email_from: str,
    smtp_host: str,
    smtp_port: int,
    smtp_security: str,
    smtp_user: str,
    alert_webhook: str,
    alert_webhook_format: str,
    digest_link: str,
    digest_customer_ids: bool,
    summary: Output[Artifact],
) -> None:
    """Check the measurement against the alert thresholds, add the retention team's daily
    digest, send each by e-mail and webhook unless already sent today (the `churn_alerts`
    table beside the predictions), and write the run summary."""
    import json
    from pathlib import Path

    from components.monitoring.alerts import Channels
    from components.monitoring.monitor import _deadline_passed, alert_plan, send_once

    result = json.loads(Path(measured.path).read_text())
    channels = Channels(
        email_to=alert_email_to, email_from=alert_email_from, smtp_host=smtp_host,
        smtp_port=smtp_port, smtp_security=smtp_security, smtp_user=smtp_user,
        webhook=alert_webhook, webhook_format=alert_webhook_format,
    )  # fmt: skip
    plan = alert_plan(
        result,
        report=report.uri,
        deadline_passed=_deadline_passed(as_of, time_zone, scores_deadline),
        scores_deadline=scores_deadline,
        drift_threshold=drift_threshold,
        promotion_floor=promotion_floor,
        high_tier_limit=high_tier_limit,
        digest_link=digest_link,
        digest_customer_ids=digest_customer_ids,
    )
    outcome = send_once(result, plan, channels) | {"report": report.uri}
    Path(summary.path).write_text(json.dumps(outcome, indent=2))
    summary.metadata.update(outcome)


def send_once(result: dict[str, Any], plan: list, channels: Any) -> dict[str, Any]:
    """Step 3's delivery: send the alerts of `plan` not yet sent on the measurement's day
    (the `churn_alerts` table beside the predictions), record those sent, and return the
    run summary."""
    from components.monitoring.alerts import deliver
    from components.monitoring.tables import alerts_uri, record_sent, sent_on

    today = date.fromisoformat(result["today"])
    log_uri = alerts_uri(result["predictions"])
    sent = deliver(plan, channels, already_sent=sent_on(log_uri, today))
    record_sent(log_uri, today, sent)
    return {
        "status": "succeeded",
        "as_of_date": result["today"],
        "model_version": result["model_version"],
        "performance_output": result["performance_output"],
        "dates": len(result["days"]),
        "alerts": [a.title for a in plan],
        "alerts_sent": [a.title for a in sent],
        "retrain_due": result["retrain_due"],
        "offers": result["offers"],
    }


def _deadline_passed(as_of: str, time_zone: str, deadline: str) -> bool:
    """Whether scores for the monitored day should be there: always for a named day (it
    has passed), for today once the clock in `time_zone` passed `deadline` (HH:MM)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    if as_of.strip():
        return True
    return datetime.now(ZoneInfo(time_zone)).strftime("%H:%M") >= deadline


def alert_plan(
    result: dict[str, Any],
    *,
    report: str,
    deadline_passed: bool,
    scores_deadline: str,
    drift_threshold: float,
    promotion_floor: float,
    high_tier_limit: int,
    digest_link: str,
    digest_customer_ids: bool,
) -> list:
    """The alerts, the retraining notice and the digest a measurement calls for."""
    from components.monitoring.alerts import Alert, check_alerts, digest

    today = date.fromisoformat(result["today"])
    days = result["days"]
    performance = performance_frame(days)
    psi = {date.fromisoformat(d["as_of_date"]): d["score_psi"] or math.nan for d in days}
    counts = result["digest"]
    alerts = check_alerts(
        performance,
        psi,
        drift_threshold=drift_threshold,
        promotion_floor=promotion_floor,
        high_tier_limit=high_tier_limit,
        scores_today=counts["scored"] if deadline_passed else None,
        today=today,
        scores_deadline=scores_deadline,
        report=report,
    )
    if result["retrain_due"]:
        alerts.append(
            Alert(
                "retrain",
                f"retraining started on {today}",
                "Realized ROC-AUC stayed under the promotion floor: a training run starts.",
                about=str(today),
            )
        )
    if counts["scored"]:
        link = (digest_link or result["predictions"]).replace("{date}", today.isoformat())
        alerts.append(
            digest(
                day=today,
                high=counts["high"],
                entered=counts["entered"],
                control=counts["control"],
                link=link,
                with_ids=digest_customer_ids,
            )
        )
    return alerts
