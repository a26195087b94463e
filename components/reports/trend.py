"""The monitoring run's trend page: the retention team's view of the model over time.

One plot per question, each over the scoring dates: how much churn the scores expect and
how many customers each tier holds; whether the customers drifted (score PSI); whether the
model ranks as well as it did (realized ROC-AUC with its interval, against the estimate
made before outcomes arrived); whether its probabilities still mean what they say
(calibration); and what the offers did (churn of offered against control customers).
"""

import math
from datetime import date
from pathlib import Path
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


def _plots(result: dict[str, Any], *, drift_threshold: float, promotion_floor: float) -> list:
    """(title, y label, draw(ax)) of each trend plot of a measurement."""
    from components.reports.page import BLUE, GREY, ORANGE, WARN

    days = result["days"]
    dates = [date.fromisoformat(d["as_of_date"]) for d in days]

    def series(name: str, scale: float = 1.0) -> list[float]:
        return [math.nan if d.get(name) is None else scale * float(d[name]) for d in days]

    def offer_series(name: str) -> list[float]:
        return [
            math.nan if d["offers"].get(name) is None else 100 * d["offers"][name] for d in days
        ]

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
        ax.plot(dates, offer_series("effect"), color=BLUE, marker=".", label="kept per 100 offers")
        ax.fill_between(dates, offer_series("effect_low"), offer_series("effect_high"),
                        color=BLUE, alpha=0.2, label="95% interval")  # fmt: skip
        ax.axhline(0, color=GREY)

    return [
        ("Expected churn and tiers", "churn rate", churn_and_tiers),
        ("Score PSI against the training data", "PSI", drift),
        ("ROC-AUC: realized against estimated", "ROC-AUC", ranking),
        ("Calibration error", "|observed - expected|", calibration),
        ("Customers kept per 100 offers", "customers", offers),
    ]


def _draw(ax, title: str, ylabel: str, draw) -> None:
    draw(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def render_trend_page(
    result: dict[str, Any], *, drift_threshold: float, promotion_floor: float
) -> str:
    """The self-contained HTML trend page of a measurement."""
    from components.reports.page import data_table, figure_to_html, html_page, new_figure

    figures = []
    for title, ylabel, draw in _plots(
        result, drift_threshold=drift_threshold, promotion_floor=promotion_floor
    ):
        fig = new_figure(title, width=6.4, height=3.2)
        _draw(fig.add_subplot(), title, ylabel, draw)
        figures.append(figure_to_html(fig))
    pooled = result.get("offers") or {}
    summary = {
        "as of": result["today"],
        "scoring dates": len(result["days"]),
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
    offers_note = (
        '<p class="note">Churn of the control group minus churn of offered customers, per '
        "100 offers: how many customers each 100 offers kept. Only dates whose outcome "
        "window has closed.</p>"
    )
    sections = [
        ("Expected churn and tiers", figures[0]),
        ("Drift of the scores", figures[1]),
        ("Ranking: realized against estimated ROC-AUC", figures[2]),
        ("Calibration over time", figures[3]),
        ("What the offers did", offers_note + figures[4]),
        ("Per date", data_table(result["days"], _TABLE_COLUMNS)),
    ]
    return html_page(f"Churn model monitoring {result['today']}", sections, summary)


def render_trend_png(
    result: dict[str, Any], path: Path, *, drift_threshold: float, promotion_floor: float
) -> Path:
    """The trend page's plots in one PNG (the README shows one from a sample-data run)."""
    from components.reports.page import new_figure

    plots = _plots(result, drift_threshold=drift_threshold, promotion_floor=promotion_floor)
    fig = new_figure("Churn model monitoring", width=12.8, height=9.6)
    for i, (title, ylabel, draw) in enumerate(plots, start=1):
        _draw(fig.add_subplot(3, 2, i), title, ylabel, draw)
    fig.suptitle(f"Churn model monitoring, as of {result['today']}")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    return path


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
