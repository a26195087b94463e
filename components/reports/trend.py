"""The monitoring run's trend page: the retention team's view of the model over time.

One plot per question, each over the scoring dates: how much churn the scores expect and
how many customers each tier holds; whether the customers drifted (score PSI); whether the
model ranks as well as it did (realized ROC-AUC with its interval, against the estimate
made before outcomes arrived); whether its probabilities still mean what they say
(calibration); and what the offers did (churn of offered against control customers).
"""

from datetime import date
from typing import Any

from kfp.dsl import HTML, Artifact, Input, Output

from components.stage import stage

# What the figures plot, from a measurement's `days` (components.monitoring.monitor).
_TABLE_COLUMNS = [
    "as_of_date",
    "scored",
    "high",
    "expected_churn",
    "observed_churn",
    "score_psi",
    "estimated_roc_auc",
    "roc_auc",
    "roc_auc_low",
    "roc_auc_high",
    "calibration_error",
    "no_outcome",
]


def render_trend_page(
    result: dict[str, Any], *, drift_threshold: float, promotion_floor: float
) -> str:
    """The self-contained HTML trend page of a measurement."""
    from components.reports.page import BLUE, GREY, ORANGE, WARN, figure_to_html, html_page

    days = result["days"]
    dates = [date.fromisoformat(d["as_of_date"]) for d in days]

    def series(name: str) -> list[float]:
        return [float("nan") if d.get(name) is None else float(d[name]) for d in days]

    def plot(label: str, ylabel: str, draw) -> str:
        from components.reports.page import new_figure

        fig = new_figure(label, width=6.4, height=3.2)
        ax = fig.add_subplot()
        draw(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        return figure_to_html(fig)

    def churn_and_tiers(ax) -> None:
        ax.plot(dates, series("expected_churn"), color=BLUE, label="expected churn (scores)")
        ax.plot(dates, series("observed_churn"), color=ORANGE, marker=".", label="observed churn")
        twin = ax.twinx()
        for tier, colour in (("high", WARN), ("medium", GREY)):
            twin.bar(dates, [d["tiers"][tier] for d in days], alpha=0.25, color=colour,
                     label=f"{tier} tier (customers)")  # fmt: skip
        twin.set_ylabel("customers")

    def drift(ax) -> None:
        ax.plot(dates, series("score_psi"), color=BLUE, marker=".", label="score PSI")
        ax.axhline(drift_threshold, color=WARN, linestyle="--", label="drift threshold")

    def ranking(ax) -> None:
        ax.plot(dates, series("estimated_roc_auc"), color=BLUE, label="estimated (from scores)")
        ax.plot(dates, series("roc_auc"), color=ORANGE, marker=".", label="realized (outcomes)")
        ax.fill_between(dates, series("roc_auc_low"), series("roc_auc_high"), color=ORANGE,
                        alpha=0.2, label="realized 95% interval")  # fmt: skip
        ax.axhline(promotion_floor, color=WARN, linestyle="--", label="promotion floor")
        if result.get("test_roc_auc"):
            ax.axhline(result["test_roc_auc"], color=GREY, linestyle=":", label="test ROC-AUC")

    def calibration(ax) -> None:
        ax.plot(dates, series("calibration_error"), color=BLUE, marker=".",
                label="calibration error")  # fmt: skip

    def offers(ax) -> None:
        effect = [d["offers"].get("effect") for d in days]
        low = [d["offers"].get("effect_low") for d in days]
        high = [d["offers"].get("effect_high") for d in days]
        as_float = [float("nan") if v is None else 100 * v for v in effect]
        ax.plot(dates, as_float, color=BLUE, marker=".", label="kept per 100 offers")
        ax.fill_between(
            dates,
            [float("nan") if v is None else 100 * v for v in low],
            [float("nan") if v is None else 100 * v for v in high],
            color=BLUE, alpha=0.2, label="95% interval",
        )  # fmt: skip
        ax.axhline(0, color=GREY)

    pooled = result.get("offers") or {}
    summary = {
        "as of": result["today"],
        "scoring dates": len(days),
        "champion version": result.get("model_version"),
        "champion test ROC-AUC": result.get("test_roc_auc"),
        "retraining due": result.get("retrain_due"),
    }
    if pooled.get("control"):
        summary["customers kept per 100 offers"] = (
            f"{100 * pooled['effect']:.1f} (95% interval {100 * pooled['effect_low']:.1f} to "
            f"{100 * pooled['effect_high']:.1f}; {pooled['offered']} offered, "
            f"{pooled['control']} control)"
        )
    from components.reports.page import data_table

    offers_note = (
        '<p class="note">Churn of the control group minus churn of offered customers, per '
        "100 offers: how many customers each 100 offers kept. Only dates whose outcome "
        "window has closed.</p>"
    )
    sections = [
        (
            "Expected churn and tiers",
            plot("Expected churn and tiers", "churn rate", churn_and_tiers),
        ),
        ("Drift of the scores", plot("Score PSI against the training data", "PSI", drift)),
        ("Ranking: realized against estimated ROC-AUC", plot("ROC-AUC", "ROC-AUC", ranking)),
        ("Calibration over time", plot("Calibration error", "|observed - expected|", calibration)),
        ("What the offers did", offers_note + plot("Kept per 100 offers", "customers", offers)),
        ("Per date", data_table(days, _TABLE_COLUMNS)),
    ]
    title = f"Churn model monitoring {result['today']}"
    return html_page(title, sections, summary)


@stage
def trend_report(
    measured: Input[Artifact],
    drift_threshold: float,
    promotion_floor: float,
    report: Output[HTML],
) -> None:
    """The trend page (self-contained HTML) of the monitoring run's measurement."""
    import json
    from pathlib import Path

    from components.reports.trend import render_trend_page

    result = json.loads(Path(measured.path).read_text())
    page = render_trend_page(
        result, drift_threshold=drift_threshold, promotion_floor=promotion_floor
    )
    Path(report.path).write_text(page, encoding="utf-8")
