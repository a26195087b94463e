"""The scoring run's summary (step 4 and 5 of the scoring pipeline): row counts checked
against what was read, expected churn rate and share flagged, tiers and input drift, as
JSON, KFP metrics and a self-contained HTML report.
"""

from typing import Any

import numpy as np
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.errors import ContractError
from components.monitoring.drift import SCORE, ReferenceProfile
from components.scoring.tiers import RISK_TIERS
from components.stage import stage


def scoring_summary(
    *, staged: dict[str, Any], published: dict[str, Any], drift: dict[str, Any] | None
) -> dict[str, Any]:
    """The run's outcome in the shape `submit.py score --json` prints. Row counts are those
    now in the warehouse for the as-of date, checked against what was read."""
    rows = {
        "read": int(staged["rows"]["read"]),
        "scored": int(published["rows"]["scored"]),
        "rejected": int(published["rows"]["rejected"]),
    }
    if rows["read"] != rows["scored"] + rows["rejected"]:
        raise ContractError(
            f"{rows['read']} rows read but {rows['scored']} scored + {rows['rejected']} "
            f"rejected are in {published['output']} for {published['as_of_date']}: rows "
            "were lost or another run wrote the same date"
        )
    scored = max(rows["scored"], 1)
    return {
        "run_id": staged["run_id"],
        "status": "succeeded",
        "model_version": int(staged["model_version"]),
        "as_of_date": published["as_of_date"],
        "output": published["output"],
        "rejects_output": published["rejects_output"],
        "exports": published["exports"],
        "rows": rows | {"duplicates": int(staged["rows"]["duplicates"])},
        # Two numbers, two names: the expected share that churns (the mean calibrated
        # probability) and the share the model flags at its threshold (more, by design: the
        # threshold maximises F1, so it flags many who will stay).
        "expected_churn_rate": round(float(staged["probability_sum"]) / scored, 4),
        "flagged_share": round(float(staged["churned"]) / scored, 4),
        "tiers": {tier: int(staged["tiers"][tier]) for tier in RISK_TIERS},
        "missing_values": {k: int(v) for k, v in staged["missing_values"].items()},
        "unseen_categories": {k: int(v) for k, v in staged["unseen_categories"].items()},
        "drift": drift,
    }


def render_scoring_report(
    *,
    title: str,
    summary: dict[str, Any],
    profile: ReferenceProfile | None,
    rows: list[dict[str, Any]],
    current_sample: dict[str, list],
    threshold: float,
    reasons: tuple[str, str] | None = None,
) -> str:
    """The scoring run's HTML report: the run summary, the reason section
    (`components.scoring.reason_trend`) when the run has one and, when the model has a
    reference profile, the drift sections (`components.report.render_drift_report` draws
    them)."""
    first = [reasons] if reasons else []
    from components.reports.drift_report import render_drift_report
    from components.reports.page import html_page

    if profile is None:
        note = (
            "<p>This model was registered without a reference profile of its training "
            "data, so input drift was not measured. Models registered from now on have "
            "one.</p>"
        )
        return html_page(title, [*first, ("Input drift", note)], summary)
    features = [r for r in rows if r["feature"] != SCORE]
    return render_drift_report(
        title=title,
        summary=summary,
        features=features,
        reference={k: v for k, v in profile.sample.items() if k != SCORE},
        current={k: v for k, v in current_sample.items() if k != SCORE},
        threshold=threshold,
        reference_scores=np.asarray(profile.sample.get(SCORE, []), dtype=float),
        current_scores=np.asarray(current_sample.get(SCORE, []), dtype=float),
        sections_before=first,
    )


@stage
def summarize_scoring(
    model: Input[Model],
    staged: Input[Dataset],
    observed: Input[Artifact],
    published: Input[Artifact],
    drift_threshold: float,
    summary: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Write the run summary (JSON), the drift report (HTML) and the headline metrics."""
    import json
    from datetime import date
    from pathlib import Path

    from components.monitoring.drift import drift_rows, drift_summary, load_profile, read_tally
    from components.scoring.reason_trend import (
        WEEK,
        has_reasons,
        published_high_tier_reasons,
        reason_section,
        staged_high_tier_reasons,
    )
    from components.scoring.summary import render_scoring_report, scoring_summary

    profile = load_profile(Path(model.path))
    counts, current_sample = read_tally(Path(observed.path).read_text())
    rows = drift_rows(profile, counts, drift_threshold) if profile else []
    drift = drift_summary(rows, drift_threshold) if profile else None
    result = scoring_summary(
        staged=dict(staged.metadata),
        published=json.loads(Path(published.path).read_text()),
        drift=drift,
    )
    # The high tier's strongest reasons, today and a week ago (only asked of the warehouse
    # when today's rows have reasons).
    as_of = date.fromisoformat(result["as_of_date"])
    today = staged_high_tier_reasons(Path(staged.path))
    last_week = (
        published_high_tier_reasons(result["output"], as_of - WEEK) if has_reasons(today) else None
    )
    result["high_tier_reasons"] = {"today": today, "a_week_ago": last_week}
    headline = {
        "model version": result["model_version"],
        "as-of date": result["as_of_date"],
        "output": result["output"],
        **{f"rows {k}": v for k, v in result["rows"].items()},
        "expected churn rate (mean probability)": f"{result['expected_churn_rate']:.1%}",
        "share flagged at the threshold": f"{result['flagged_share']:.1%}",
        **{f"tier {k}": v for k, v in result["tiers"].items()},
        "missing values scored": sum(result["missing_values"].values()),
        "unseen categories scored": sum(result["unseen_categories"].values()),
    }
    if drift:
        headline["drifted features"] = ", ".join(drift["drifted_features"]) or "none"
        headline["score PSI"] = drift["score_psi"]
    html = render_scoring_report(
        title=f"Churn scoring {result['as_of_date']}: run {result['run_id']}",
        summary=headline,
        profile=profile,
        rows=rows,
        current_sample=current_sample,
        threshold=drift_threshold,
        reasons=reason_section(today, last_week, as_of),
    )
    Path(report.path).write_text(html, encoding="utf-8")
    result["report"] = report.uri
    Path(summary.path).write_text(json.dumps(result, indent=2))
    for name, value in result["rows"].items():
        metrics.log_metric(f"rows_{name}", value)
    metrics.log_metric("expected_churn_rate", result["expected_churn_rate"])
    metrics.log_metric("flagged_share", result["flagged_share"])
    for tier, count in result["tiers"].items():
        metrics.log_metric(f"tier_{tier}", count)
    if drift:
        metrics.log_metric("features_drifted", len(drift["drifted_features"]))
        metrics.log_metric("max_feature_psi", drift["max_feature_psi"])
        metrics.log_metric("score_psi", drift["score_psi"])
    # The whole summary as metadata: `submit.py score --wait` reads it from the run's task
    # details on Vertex, where the JSON file is in GCS.
    summary.metadata.update(result)


@stage
def summary_text(summary: Input[Artifact]) -> str:
    """The run summary as text, the form a pipeline can take from whichever scoring
    branch ran (kfp.local's `dsl.OneOf` selects parameters, not artifacts)."""
    from pathlib import Path

    return Path(summary.path).read_text()


@stage
def scoring_result(summary_json: str, summary: Output[Artifact]) -> None:
    """The scoring run's summary artifact (JSON, key figures as metadata)."""
    import json
    from pathlib import Path

    result = json.loads(summary_json)
    Path(summary.path).write_text(json.dumps(result, indent=2))
    summary.metadata.update(result)  # whole, as `summarize_scoring` does
