"""The scoring run's drift report: PSI per feature, the distributions that moved and the
scores, reference against current.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from components.reports.page import (
    BLUE,
    GREY,
    ORANGE,
    WARN,
    as_float,
    data_table,
    figure_to_html,
    html_page,
    new_figure,
    sort_key,
)

_MAX_PSI_BARS = 30

_MAX_DRIFT_PLOTS = 8

_MAX_CATEGORIES = 12


def render_drift_report(
    *,
    title: str,
    summary: dict[str, object],
    features: list[dict[str, object]],
    reference: dict[str, np.ndarray | list],
    current: dict[str, np.ndarray | list],
    threshold: float,
    reference_scores: np.ndarray | None = None,
    current_scores: np.ndarray | None = None,
    sections_before: Sequence[tuple[str, str]] = (),
) -> str:
    """HTML report of input drift, so an on-call engineer sees which features moved and how.

    ``features`` carry the PSI and drift flag computed by the drift check; this only draws
    them. Missing values (None, NaN) are dropped before plotting. `sections_before`
    (heading, HTML) come first (the scoring report's reason codes).
    """
    ordered = sorted(features, key=lambda f: sort_key(as_float(f.get("psi"))))
    n_drifted = sum(bool(f.get("drifted")) for f in ordered)
    psi_body = (
        f"<p>{n_drifted} of {len(ordered)} features are flagged as drifted "
        f"(PSI threshold {threshold:.4g}).</p>" + figure_to_html(_psi_figure(ordered, threshold))
    )
    table = data_table(
        ordered, row_classes=["drifted" if f.get("drifted") else "" for f in ordered]
    )

    plotted = [f for f in ordered if f.get("feature") in reference and f.get("feature") in current]
    plotted = plotted[:_MAX_DRIFT_PLOTS]
    figures = "".join(
        figure_to_html(_distribution_figure(f, reference[f["feature"]], current[f["feature"]]))
        for f in plotted
    )
    distributions = (
        f'<p class="note">The {len(plotted)} features with the highest PSI; shares of '
        "non-missing rows, reference (training) against current.</p>"
        f'<div class="figures">{figures}</div>'
    )
    sections = [
        ("Population stability index (PSI)", psi_body),
        ("Features by PSI", table),
        ("Distributions of the most drifted features", distributions),
    ]
    if reference_scores is not None and current_scores is not None:
        score_fig = _score_figure(_clean_numeric(reference_scores), _clean_numeric(current_scores))
        sections.append(("Score distribution", figure_to_html(score_fig)))
    return html_page(title, [*sections_before, *sections], summary)


def _clean_numeric(values: np.ndarray | list) -> np.ndarray:
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)
    return numbers[np.isfinite(numbers)]


def _clean_categories(values: np.ndarray | list) -> pd.Series:
    return pd.Series(values, dtype=object).dropna().astype(str)


def _psi_figure(ordered: list[dict[str, object]], threshold: float) -> Figure:
    shown = ordered[:_MAX_PSI_BARS]
    fig = new_figure("PSI by feature", height=min(7.0, max(2.2, 0.22 * len(shown) + 1.0)))
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    psi = np.array([as_float(f.get("psi")) for f in shown])
    colours = [WARN if f.get("drifted") else GREY for f in shown]
    ax.barh(y, np.nan_to_num(psi), color=colours, height=0.7)
    ax.set_yticks(y, labels=[str(f.get("feature")) for f in shown], parse_math=False, fontsize=8)
    for pos in y[np.isnan(psi)]:
        ax.text(0, pos, " n/a", va="center", fontsize=8)
    ax.invert_yaxis()
    line = ax.axvline(threshold, color="black", lw=1, ls="--", label=f"threshold {threshold:.3g}")
    handles = [Patch(color=WARN, label="drifted"), Patch(color=GREY, label="stable"), line]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlabel("PSI")
    if len(ordered) > len(shown):
        ax.set_title(f"top {len(shown)} of {len(ordered)} features", fontsize=9)
    return fig


def _distribution_figure(
    feature: dict[str, object], reference: np.ndarray | list, current: np.ndarray | list
) -> Figure:
    name = str(feature.get("feature"))
    fig = new_figure(f"{name}: reference against current", width=4.6, height=3.0)
    ax = fig.add_subplot()
    psi = as_float(feature.get("psi"))
    psi_text = "n/a" if math.isnan(psi) else f"{psi:.3f}"
    status = ", drifted" if feature.get("drifted") else ""
    ax.set_title(f"{name} (PSI {psi_text}{status})", fontsize=10, parse_math=False)
    if feature.get("kind") == "numeric":
        _draw_histograms(ax, _clean_numeric(reference), _clean_numeric(current))
    else:
        _draw_category_shares(ax, _clean_categories(reference), _clean_categories(current))
    return fig


def _draw_histograms(
    ax: Axes, reference: np.ndarray, current: np.ndarray, edges: np.ndarray | None = None
) -> None:
    """Overlay as shares of rows, so samples of different sizes compare directly."""
    if not len(reference) or not len(current):
        ax.text(0.5, 0.5, "no values on one side", ha="center", transform=ax.transAxes)
        return
    if edges is None:
        edges, whole_numbers = _bin_edges(np.concatenate([reference, current]))
        if whole_numbers:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top = 0.0
    for values, colour, name, style in (
        (reference, BLUE, "reference", {"histtype": "stepfilled", "alpha": 0.4}),
        (current, ORANGE, "current", {"histtype": "step", "lw": 1.8}),
    ):
        weights = np.full(len(values), 1 / len(values))
        mean = values.mean()
        mean_text = f"{mean:,.0f}" if abs(mean) >= 100 else f"{mean:.3g}"
        label = f"{name} (mean {mean_text}, n = {len(values):,})"
        shares, _, _ = ax.hist(
            values, bins=edges, weights=weights, color=colour, label=label, **style
        )
        top = max(top, shares.max())
    ax.set_ylim(0, top * 1.4)  # headroom so the legend never covers the bars
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("share of rows")
    ax.legend(loc="upper right", fontsize=8)


def _bin_edges(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """30 bins, or bins centred on whole numbers (so counts like tenure or 0/1 flags don't
    alias); the flag says which."""
    low, high = float(values.min()), float(values.max())
    if np.all(values == np.round(values)):
        step = max(1, math.ceil((high - low + 1) / 40))
        n_bins = math.ceil((high - low + 1) / step)
        return low - 0.5 + step * np.arange(n_bins + 1), True
    return np.histogram_bin_edges(values, bins=30), False


def _draw_category_shares(ax: Axes, reference: pd.Series, current: pd.Series) -> None:
    shares = pd.DataFrame(
        {
            "reference": reference.value_counts(normalize=True),
            "current": current.value_counts(normalize=True),
        }
    ).fillna(0.0)
    shares = shares.loc[shares.max(axis=1).sort_values(ascending=False).index]
    if len(shares) > _MAX_CATEGORIES:
        rest = shares.iloc[_MAX_CATEGORIES - 1 :].sum()
        shares = pd.concat([shares.iloc[: _MAX_CATEGORIES - 1], rest.to_frame("(other)").T])
    y = np.arange(len(shares))
    ax.barh(y - 0.2, shares["reference"], height=0.4, color=BLUE, label="reference")
    ax.barh(y + 0.2, shares["current"], height=0.4, color=ORANGE, label="current")
    ax.set_yticks(y, labels=list(shares.index), parse_math=False, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, shares.to_numpy().max() * 1.3)  # headroom so the legend never covers the bars
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of rows")
    ax.legend(loc="lower right", fontsize=8)


def _score_figure(reference: np.ndarray, current: np.ndarray) -> Figure:
    fig = new_figure("Score distribution: reference against current")
    ax = fig.add_subplot()
    _draw_histograms(ax, reference, current, edges=np.linspace(0, 1, 21))
    ax.set(xlabel="predicted churn probability", xlim=(0, 1))
    return fig
