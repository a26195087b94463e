"""The training run's HTML report: metrics, ROC, precision-recall and calibration curves,
the confusion matrix, the candidates and the features that mattered.

scikit-learn is imported by its figures only, when they are drawn.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from matplotlib.figure import Figure

from components.reports.page import (
    BLUE,
    GREY,
    ORANGE,
    as_float,
    data_table,
    figure_to_html,
    html_page,
    new_figure,
    sort_key,
)

_TOP_FEATURES = 20


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
    attribution_importance: dict[str, float] | None = None,
) -> str:
    """HTML report of one training run, so a reviewer can judge the model before it serves.

    Shows ROC (with the champion's curve when given), precision-recall, calibration (of
    the model's raw scores too, when `y_prob_raw` gives them), the
    confusion matrix at ``threshold`` (a customer is flagged when probability >= threshold),
    the candidate comparison and the top feature importances (beside the importance from
    the reason codes' attributions, when `attribution_importance` gives it).
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
        + data_table([at_threshold])
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
        (
            "Feature importance",
            _importance_body(feature_importance)
            + _attribution_body(feature_importance, attribution_importance),
        ),
    ]
    return html_page(title, sections, summary)


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


def _roc_figure(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    champion_prob: np.ndarray | None,
    point: tuple[float, float],
    point_label: str,
) -> Figure:
    from sklearn.metrics import auc, roc_curve

    fig = new_figure("ROC curve")
    ax = fig.add_subplot()
    fpr, tpr, _ = roc_curve(y_true, y_prob)
    ax.plot(fpr, tpr, color=BLUE, lw=2, label=f"this model (AUC = {auc(fpr, tpr):.3f})")
    if champion_prob is not None:
        c_fpr, c_tpr, _ = roc_curve(y_true, champion_prob)
        label = f"champion (AUC = {auc(c_fpr, c_tpr):.3f})"
        ax.plot(c_fpr, c_tpr, color=ORANGE, lw=1.5, ls="--", label=label)
    ax.plot([0, 1], [0, 1], color=GREY, lw=1, ls=":", label="chance")
    ax.plot(*point, "o", color="black", ms=5, label=point_label)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _pr_figure(
    y_true: np.ndarray, y_prob: np.ndarray, point: tuple[float, float], point_label: str
) -> Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = new_figure("Precision-recall curve")
    ax = fig.add_subplot()
    precision, recall, _ = precision_recall_curve(y_true, y_prob)
    ap = average_precision_score(y_true, y_prob)
    ax.plot(recall, precision, color=BLUE, lw=2, drawstyle="steps-post", label=f"AP = {ap:.3f}")
    prevalence = y_true.mean()
    ax.axhline(
        prevalence, color=GREY, lw=1, ls=":", label=f"no skill (prevalence = {prevalence:.3f})"
    )
    ax.plot(*point, "o", color="black", ms=5, label=point_label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    return fig


def _calibration_figure(
    y_true: np.ndarray, y_prob: np.ndarray, y_prob_raw: np.ndarray | None = None
) -> Figure:
    from sklearn.calibration import calibration_curve

    fig = new_figure("Calibration curve", height=4.0)
    curve, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve.plot([0, 1], [0, 1], color=GREY, lw=1, ls=":", label="perfectly calibrated")
    if y_prob_raw is not None:
        observed, predicted = calibration_curve(y_true, y_prob_raw, n_bins=10, strategy="quantile")
        curve.plot(predicted, observed, "s--", color=GREY, ms=3, label="raw (uncalibrated)")
        hist.hist(y_prob_raw, bins=20, range=(0, 1), color=GREY, alpha=0.4)
    observed, predicted = calibration_curve(y_true, y_prob, n_bins=10, strategy="quantile")
    curve.plot(predicted, observed, "o-", color=BLUE, ms=4, label="this model (published)")
    curve.set(ylabel="observed churn rate", xlim=(0, 1), ylim=(0, 1))
    curve.legend(loc="upper left", fontsize=8)
    hist.hist(y_prob, bins=20, range=(0, 1), color=BLUE, alpha=0.7)
    hist.set(xlabel="predicted churn probability", ylabel="customers")
    return fig


def _confusion_figure(counts: np.ndarray) -> Figure:
    fig = new_figure("Confusion matrix", width=4.0, height=3.3)
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
        key=lambda pair: sort_key(as_float(pair[1].get("cv_roc_auc_mean"))),
    )
    rows = [
        {"candidate": label} | {k: v for k, v in c.items() if k != "model"} for label, c in ranked
    ]
    selected = [bool(row.get("selected")) for row in rows]
    fig = _candidates_figure(
        [label for label, _ in ranked],
        [as_float(row.get("cv_roc_auc_mean")) for row in rows],
        [as_float(row.get("cv_roc_auc_std")) for row in rows],
        selected,
    )
    return (
        '<p class="note">Cross-validated ROC-AUC (mean and standard deviation over folds), best '
        "first; the axis is zoomed to the range of the scores.</p>"
        + figure_to_html(fig)
        + data_table(rows, row_classes=["selected" if chosen else "" for chosen in selected])
    )


def _candidates_figure(
    labels: list[str], means: list[float], stds: list[float], selected: list[bool]
) -> Figure:
    fig = new_figure("Candidate comparison", height=min(6.0, max(2.2, 0.4 * len(labels) + 1.0)))
    ax = fig.add_subplot()
    means_arr = np.array(means)
    stds_arr = np.nan_to_num(np.array(stds))
    y = np.arange(len(labels))
    colours = [BLUE if chosen else GREY for chosen in selected]
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


def _attribution_body(permutation: dict[str, float], attribution: dict[str, float] | None) -> str:
    """Permutation importance beside the mean absolute contribution of the reason codes'
    attributions, feature by feature (issue 21)."""
    if not attribution:
        return ""
    rows = [
        {
            "feature": name,
            "mean |contribution| (percentage points)": round(100 * as_float(value), 2),
            "permutation (ROC-AUC drop)": permutation.get(name),
        }
        for name, value in attribution.items()
    ]
    return (
        '<p class="note">The same features by the reason codes\' attributions: the mean size '
        "of each feature's contribution to the published probability, in percentage "
        "points, beside the drop in ROC-AUC when it is shuffled. The first says how much a "
        "feature moves customers' scores, the second how much the ranking needs it.</p>"
        + data_table(rows)
    )


def _importance_body(feature_importance: dict[str, float]) -> str:
    items = [(str(name), as_float(value)) for name, value in feature_importance.items()]
    items = sorted((item for item in items if not math.isnan(item[1])), key=lambda kv: -kv[1])
    if not items:
        return '<p class="note">No feature importance was recorded.</p>'
    top = items[:_TOP_FEATURES]
    fig = new_figure("Feature importance", height=min(5.0, max(2.0, 0.2 * len(top) + 0.8)))
    ax = fig.add_subplot()
    y = np.arange(len(top))
    ax.barh(y, [value for _, value in top], color=BLUE, height=0.7)
    ax.set_yticks(y, labels=[name for name, _ in top], parse_math=False, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("importance")
    shown = f"top {len(top)} of {len(items)}" if len(items) > len(top) else f"all {len(items)}"
    return f'<p class="note">Features by importance ({shown}).</p>' + figure_to_html(fig)
