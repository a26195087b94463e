"""Self-contained HTML reports for the training and scoring pipelines.

The Vertex AI console shows HTML artifacts in a sandbox and users may be offline, so a report
is one file: plots are embedded as base64 PNG, the CSS is inline, and there is no script and
no external reference. Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas
(never pyplot), so rendering touches no global state and a figure is freed with its last
reference.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

# scikit-learn is imported by the training report's figures only: the scoring summary step
# draws the drift report without paying for its import.

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
_BLUE = "#0072B2"  # this model, reference data
_ORANGE = "#E69F00"  # champion, current data
_WARN = "#D55E00"  # drifted features
_GREY = "#9AA5B1"  # everything not highlighted

_DPI = 100
_PAD_INCHES = 0.1  # matplotlib's default for tight bboxes
_TOP_FEATURES = 20
_MAX_PSI_BARS = 30
_MAX_DRIFT_PLOTS = 8
_MAX_CATEGORIES = 12
_MISSING = "\u2014"  # em dash

# A browser that honours this refuses any fetch, so a stray external reference fails loudly.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: #1f2933; line-height: 1.45; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 1rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; padding-bottom: .25rem;
  border-bottom: 1px solid #d9e2ec; }
.summary { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.5rem; margin: 0;
  padding: .8rem 1rem; background: #f0f4f8; border: 1px solid #d9e2ec; border-radius: 6px; }
.summary dt { font-weight: 600; }
.summary dd { margin: 0; }
table { border-collapse: collapse; font-size: .9rem; margin: .75rem 0; }
th, td { padding: .3rem .7rem; text-align: left; border-bottom: 1px solid #d9e2ec; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.selected td { font-weight: 600; background: #e3f0fa; }
tr.drifted td { background: #fde8dc; }
img { max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
.note { color: #52606d; }
"""


def figure_to_html(fig: Figure) -> str:
    """<img> tag with the figure as embedded PNG, so the report needs no other file.

    The figure's label (``fig.set_label``) becomes the alt text.
    """
    # An explicit bbox gives the same PNG as bbox_inches="tight" without its extra draw pass
    # (a third of the render time); a layout engine only runs in that pass, so keep it then.
    bbox = "tight" if fig.get_layout_engine() else fig.get_tightbbox().padded(_PAD_INCHES)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches=bbox, metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = html.escape(fig.get_label() or "figure")
    return f'<img src="data:image/png;base64,{data}" alt="{alt}">'


def html_table(rows: list[dict[str, object]], columns: list[str] | None = None) -> str:
    """Escaped HTML table, so names from configs or data can never inject markup.

    Columns default to every key in order of first appearance; floats are shown to 4
    significant digits, dicts as ``key=value`` lists and missing values (None, NaN) as a dash.
    """
    return _table(rows, columns)


def html_page(
    title: str, sections: list[tuple[str, str]], summary: dict[str, object] | None = None
) -> str:
    """Whole self-contained HTML document: <h1>title, optional summary box, then each section.

    Titles, headings and summary entries are escaped; section bodies are trusted HTML (built
    with the helpers of this module).
    """
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if summary:
        items = "".join(
            f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(_format_value(value))}</dd>"
            for key, value in summary.items()
        )
        parts.append(f'<dl class="summary">{items}</dl>')
    parts.extend(
        f"<section>\n<h2>{html.escape(heading)}</h2>\n{body}\n</section>"
        for heading, body in sections
    )
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def render_training_report(
    *,
    title: str,
    summary: dict[str, object],
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float,
    candidates: list[dict[str, object]],
    feature_importance: dict[str, float],
    champion_prob: np.ndarray | None = None,
    y_prob_raw: np.ndarray | None = None,
) -> str:
    """HTML report of one training run, so a reviewer can judge the model before it serves.

    Shows ROC (with the champion's curve when given), precision-recall, calibration (of
    the model's raw scores too, when `y_prob_raw` gives them), the
    confusion matrix at ``threshold`` (a customer is flagged when probability >= threshold),
    the candidate comparison and the top feature importances.
    """
    y_true = _checked_labels(y_true)
    y_prob = _checked_probabilities(y_prob, y_true, "y_prob")
    if champion_prob is not None:
        champion_prob = _checked_probabilities(champion_prob, y_true, "champion_prob")
    if y_prob_raw is not None:
        y_prob_raw = _checked_probabilities(y_prob_raw, y_true, "y_prob_raw")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1]; got {threshold!r}")

    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(y_true, (y_prob >= threshold).astype(int), labels=[0, 1])
    (tn, fp), (fn, tp) = counts.tolist()
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn)
    flagged = tp + fp
    at_threshold = {
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "F1": 2 * tp / (2 * tp + fp + fn),
        "customers flagged": f"{flagged:,} of {len(y_true):,} ({flagged / len(y_true):.1%})",
    }
    threshold_body = (
        f"<p>A customer is flagged as a churner when the predicted probability is at least "
        f"{threshold:.4g}. The marker on the ROC and precision-recall curves is this point.</p>"
        + _table([at_threshold])
        + figure_to_html(_confusion_figure(counts))
        + '<p class="note">Percentages are shares of each actual class (row).</p>'
    )
    marker = f"threshold {threshold:.3g}"
    roc = _roc_figure(y_true, y_prob, champion_prob, (fp / (fp + tn), recall), marker)
    sections = [
        ("ROC curve", figure_to_html(roc)),
        (
            "Precision-recall curve",
            figure_to_html(_pr_figure(y_true, y_prob, (recall, precision), marker)),
        ),
        (
            "Calibration",
            '<p class="note">Observed churn rate per decile of predicted probability; '
            "points on the diagonal mean the probabilities can be read at face value. "
            "Raw: the model's scores before calibration (resampling inflates them).</p>"
            + figure_to_html(_calibration_figure(y_true, y_prob, y_prob_raw)),
        ),
        (f"Decision threshold ({threshold:.4g}) and confusion matrix", threshold_body),
        ("Candidate comparison", _candidates_body(candidates)),
        ("Feature importance", _importance_body(feature_importance)),
    ]
    return html_page(title, sections, summary)


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
) -> str:
    """HTML report of input drift, so an on-call engineer sees which features moved and how.

    ``features`` carry the PSI and drift flag computed by the drift check; this only draws
    them. Missing values (None, NaN) are dropped before plotting.
    """
    ordered = sorted(features, key=lambda f: _sort_key(_as_float(f.get("psi"))))
    n_drifted = sum(bool(f.get("drifted")) for f in ordered)
    psi_body = (
        f"<p>{n_drifted} of {len(ordered)} features are flagged as drifted "
        f"(PSI threshold {threshold:.4g}).</p>" + figure_to_html(_psi_figure(ordered, threshold))
    )
    table = _table(ordered, row_classes=["drifted" if f.get("drifted") else "" for f in ordered])

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
    return html_page(title, sections, summary)


# --- tables and values -----------------------------------------------------------------------


def _format_value(value: object) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return _MISSING if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, Mapping):  # e.g. a candidate's hyper-parameters
        return ", ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    return str(value)


def _table(
    rows: Sequence[dict[str, object]],
    columns: list[str] | None = None,
    row_classes: Sequence[str] | None = None,
) -> str:
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not rows or not columns:
        return '<p class="note">No rows.</p>'
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(_cell(row.get(column)) for column in columns)
        body.append(f"<tr{css}>{cells}</tr>\n")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(body)}</tbody>\n</table>"


def _cell(value: object) -> str:
    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{html.escape(_format_value(value))}</td>"


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _sort_key(value: float) -> tuple[bool, float]:
    """Largest first, missing values last."""
    return (math.isnan(value), 0.0 if math.isnan(value) else -value)


def _checked_labels(y_true: np.ndarray) -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"y_true must be 1-D; got shape {labels.shape}")
    unexpected = labels[~np.isin(labels, (0, 1))]
    if len(unexpected):
        raise ValueError(f"y_true must hold 0/1 labels; found {unexpected[:3].tolist()}")
    if len(np.unique(labels)) < 2:
        raise ValueError("y_true must contain both classes to draw ROC and precision-recall curves")
    return labels.astype(int)


def _checked_probabilities(scores: np.ndarray, y_true: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(scores, dtype=float)
    if values.shape != y_true.shape:
        raise ValueError(f"{name} has shape {values.shape}; expected {y_true.shape} like y_true")
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        raise ValueError(f"{name} has {bad} missing or infinite values; the model output is broken")
    return values


def _clean_numeric(values: np.ndarray | list) -> np.ndarray:
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)
    return numbers[np.isfinite(numbers)]


def _clean_categories(values: np.ndarray | list) -> pd.Series:
    return pd.Series(values, dtype=object).dropna().astype(str)


# --- figures ---------------------------------------------------------------------------------


def _new_figure(label: str, width: float = 5.0, height: float = 3.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.set_label(label)
    return fig


def _roc_figure(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    champion_prob: np.ndarray | None,
    point: tuple[float, float],
    point_label: str,
) -> Figure:
    from sklearn.metrics import auc, roc_curve

    fig = _new_figure("ROC curve")
    ax = fig.add_subplot()
    fpr, tpr, _ = roc_curve(y_true, y_prob)
    ax.plot(fpr, tpr, color=_BLUE, lw=2, label=f"this model (AUC = {auc(fpr, tpr):.3f})")
    if champion_prob is not None:
        c_fpr, c_tpr, _ = roc_curve(y_true, champion_prob)
        label = f"champion (AUC = {auc(c_fpr, c_tpr):.3f})"
        ax.plot(c_fpr, c_tpr, color=_ORANGE, lw=1.5, ls="--", label=label)
    ax.plot([0, 1], [0, 1], color=_GREY, lw=1, ls=":", label="chance")
    ax.plot(*point, "o", color="black", ms=5, label=point_label)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _pr_figure(
    y_true: np.ndarray, y_prob: np.ndarray, point: tuple[float, float], point_label: str
) -> Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _new_figure("Precision-recall curve")
    ax = fig.add_subplot()
    precision, recall, _ = precision_recall_curve(y_true, y_prob)
    ap = average_precision_score(y_true, y_prob)
    ax.plot(recall, precision, color=_BLUE, lw=2, drawstyle="steps-post", label=f"AP = {ap:.3f}")
    prevalence = y_true.mean()
    ax.axhline(
        prevalence, color=_GREY, lw=1, ls=":", label=f"no skill (prevalence = {prevalence:.3f})"
    )
    ax.plot(*point, "o", color="black", ms=5, label=point_label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    return fig


def _calibration_figure(
    y_true: np.ndarray, y_prob: np.ndarray, y_prob_raw: np.ndarray | None = None
) -> Figure:
    from sklearn.calibration import calibration_curve

    fig = _new_figure("Calibration curve", height=4.0)
    curve, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve.plot([0, 1], [0, 1], color=_GREY, lw=1, ls=":", label="perfectly calibrated")
    if y_prob_raw is not None:
        observed, predicted = calibration_curve(y_true, y_prob_raw, n_bins=10, strategy="quantile")
        curve.plot(predicted, observed, "s--", color=_GREY, ms=3, label="raw (uncalibrated)")
        hist.hist(y_prob_raw, bins=20, range=(0, 1), color=_GREY, alpha=0.4)
    observed, predicted = calibration_curve(y_true, y_prob, n_bins=10, strategy="quantile")
    curve.plot(predicted, observed, "o-", color=_BLUE, ms=4, label="this model (published)")
    curve.set(ylabel="observed churn rate", xlim=(0, 1), ylim=(0, 1))
    curve.legend(loc="upper left", fontsize=8)
    hist.hist(y_prob, bins=20, range=(0, 1), color=_BLUE, alpha=0.7)
    hist.set(xlabel="predicted churn probability", ylabel="customers")
    return fig


def _confusion_figure(counts: np.ndarray) -> Figure:
    fig = _new_figure("Confusion matrix", width=4.0, height=3.3)
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    for (row, col), count in np.ndenumerate(counts):
        share = count / max(counts[row].sum(), 1)
        colour = "white" if count > counts.max() / 2 else "black"
        ax.text(col, row, f"{count:,}\n({share:.0%})", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], labels=["stays", "churns"])
    ax.set_yticks([0, 1], labels=["stays", "churns"])
    ax.set(xlabel="predicted", ylabel="actual")
    return fig


def _candidate_labels(candidates: list[dict[str, object]]) -> list[str]:
    """Model names, numbered where one model was tried with several configurations."""
    names = [str(c.get("model", f"candidate {i + 1}")) for i, c in enumerate(candidates)]
    totals, seen = Counter(names), Counter[str]()
    labels = []
    for name in names:
        seen[name] += 1
        labels.append(f"{name} #{seen[name]}" if totals[name] > 1 else name)
    return labels


def _candidates_body(candidates: list[dict[str, object]]) -> str:
    if not candidates:
        return '<p class="note">No candidates were recorded.</p>'
    ranked = sorted(
        zip(_candidate_labels(candidates), candidates, strict=True),
        key=lambda pair: _sort_key(_as_float(pair[1].get("cv_roc_auc_mean"))),
    )
    rows = [
        {"candidate": label} | {k: v for k, v in c.items() if k != "model"} for label, c in ranked
    ]
    selected = [bool(row.get("selected")) for row in rows]
    fig = _candidates_figure(
        [label for label, _ in ranked],
        [_as_float(row.get("cv_roc_auc_mean")) for row in rows],
        [_as_float(row.get("cv_roc_auc_std")) for row in rows],
        selected,
    )
    return (
        '<p class="note">Cross-validated ROC-AUC (mean and standard deviation over folds), best '
        "first; the axis is zoomed to the range of the scores.</p>"
        + figure_to_html(fig)
        + _table(rows, row_classes=["selected" if chosen else "" for chosen in selected])
    )


def _candidates_figure(
    labels: list[str], means: list[float], stds: list[float], selected: list[bool]
) -> Figure:
    fig = _new_figure("Candidate comparison", height=min(6.0, max(2.2, 0.4 * len(labels) + 1.0)))
    ax = fig.add_subplot()
    means_arr = np.array(means)
    stds_arr = np.nan_to_num(np.array(stds))
    y = np.arange(len(labels))
    colours = [_BLUE if chosen else _GREY for chosen in selected]
    ax.barh(y, np.nan_to_num(means_arr), xerr=stds_arr, color=colours, capsize=3, height=0.6)
    ticks = [
        f"{label} (selected)" if chosen else label
        for label, chosen in zip(labels, selected, strict=True)
    ]
    ax.set_yticks(y, labels=ticks, parse_math=False, fontsize=8)
    ax.invert_yaxis()

    finite = np.isfinite(means_arr)
    if finite.any():
        low = float(np.min(means_arr[finite] - stds_arr[finite]))
        high = float(np.max(means_arr[finite] + stds_arr[finite]))
        pad = max(0.01, 0.25 * (high - low))
        left = max(0.0, low - pad)
        ax.set_xlim(left, min(1.0, high + pad))
    else:
        left = 0.0
    for pos, mean, std in zip(y, means_arr, stds_arr, strict=True):
        text = "no score" if math.isnan(mean) else f"{mean:.3f}"
        x = left if math.isnan(mean) else mean + std
        ax.text(x, pos, f" {text}", va="center", fontsize=8)
    ax.set_xlabel("CV ROC-AUC")
    return fig


def _importance_body(feature_importance: dict[str, float]) -> str:
    items = [(str(name), _as_float(value)) for name, value in feature_importance.items()]
    items = sorted((item for item in items if not math.isnan(item[1])), key=lambda kv: -kv[1])
    if not items:
        return '<p class="note">No feature importance was recorded.</p>'
    top = items[:_TOP_FEATURES]
    fig = _new_figure("Feature importance", height=min(5.0, max(2.0, 0.2 * len(top) + 0.8)))
    ax = fig.add_subplot()
    y = np.arange(len(top))
    ax.barh(y, [value for _, value in top], color=_BLUE, height=0.7)
    ax.set_yticks(y, labels=[name for name, _ in top], parse_math=False, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("importance")
    shown = f"top {len(top)} of {len(items)}" if len(items) > len(top) else f"all {len(items)}"
    return f'<p class="note">Features by importance ({shown}).</p>' + figure_to_html(fig)


def _psi_figure(ordered: list[dict[str, object]], threshold: float) -> Figure:
    shown = ordered[:_MAX_PSI_BARS]
    fig = _new_figure("PSI by feature", height=min(7.0, max(2.2, 0.22 * len(shown) + 1.0)))
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    psi = np.array([_as_float(f.get("psi")) for f in shown])
    colours = [_WARN if f.get("drifted") else _GREY for f in shown]
    ax.barh(y, np.nan_to_num(psi), color=colours, height=0.7)
    ax.set_yticks(y, labels=[str(f.get("feature")) for f in shown], parse_math=False, fontsize=8)
    for pos in y[np.isnan(psi)]:
        ax.text(0, pos, " n/a", va="center", fontsize=8)
    ax.invert_yaxis()
    line = ax.axvline(threshold, color="black", lw=1, ls="--", label=f"threshold {threshold:.3g}")
    handles = [Patch(color=_WARN, label="drifted"), Patch(color=_GREY, label="stable"), line]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlabel("PSI")
    if len(ordered) > len(shown):
        ax.set_title(f"top {len(shown)} of {len(ordered)} features", fontsize=9)
    return fig


def _distribution_figure(
    feature: dict[str, object], reference: np.ndarray | list, current: np.ndarray | list
) -> Figure:
    name = str(feature.get("feature"))
    fig = _new_figure(f"{name}: reference against current", width=4.6, height=3.0)
    ax = fig.add_subplot()
    psi = _as_float(feature.get("psi"))
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
        (reference, _BLUE, "reference", {"histtype": "stepfilled", "alpha": 0.4}),
        (current, _ORANGE, "current", {"histtype": "step", "lw": 1.8}),
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
    ax.barh(y - 0.2, shares["reference"], height=0.4, color=_BLUE, label="reference")
    ax.barh(y + 0.2, shares["current"], height=0.4, color=_ORANGE, label="current")
    ax.set_yticks(y, labels=list(shares.index), parse_math=False, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, shares.to_numpy().max() * 1.3)  # headroom so the legend never covers the bars
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of rows")
    ax.legend(loc="lower right", fontsize=8)


def _score_figure(reference: np.ndarray, current: np.ndarray) -> Figure:
    fig = _new_figure("Score distribution: reference against current")
    ax = fig.add_subplot()
    _draw_histograms(ax, reference, current, edges=np.linspace(0, 1, 21))
    ax.set(xlabel="predicted churn probability", xlim=(0, 1))
    return fig
