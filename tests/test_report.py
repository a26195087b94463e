"""Reports must open offline in the Vertex sandbox: one file, no script, nothing fetched."""

import base64
import re

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from components.reports.drift_report import (
    _distribution_figure,
    _psi_figure,
    render_drift_report,
)
from components.reports.page import WARN, figure_to_html, html_page, html_table
from components.reports.training_report import _roc_figure, render_training_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EMBEDDED_PNG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def assert_self_contained(page: str, images: int) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    lowered = page.lower()
    assert "<script" not in lowered
    assert "http://" not in lowered
    assert "https://" not in lowered
    assert "@import" not in lowered
    assert "url(" not in lowered
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    embedded = EMBEDDED_PNG.findall(page)
    assert len(embedded) == page.count("<img") == images
    assert all(base64.b64decode(data).startswith(PNG_SIGNATURE) for data in embedded)


def scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = (rng.random(n) < 0.27).astype(int)
    y_prob = 1 / (1 + np.exp(-(-1.2 + 2.0 * y_true + rng.normal(0, 1, n))))
    return y_true, y_prob


def candidate(model: str, auc: float, selected: bool = False) -> dict[str, object]:
    return {
        "model": model,
        "params": "C=1.0",
        "cv_roc_auc_mean": auc,
        "cv_roc_auc_std": 0.01,
        "cv_f1_mean": 0.6,
        "fit_seconds": 1.2,
        "selected": selected,
    }


def training_page(n: int = 600, **overrides: object) -> str:
    y_true, y_prob = scores(n)
    arguments: dict[str, object] = {
        "title": "Churn model <v3>",
        "summary": {"model version": 3, "promoted": "yes", "rows read": 21096},
        "y_true": y_true,
        "y_prob": y_prob,
        # a score that occurs, so the flagged count tells ">=" from ">": a quarter are flagged
        "threshold": float(np.sort(y_prob)[n * 3 // 4]),
        "candidates": [
            candidate("logistic_regression", 0.80),
            candidate("random_forest", 0.85, selected=True),
            candidate("random_forest", 0.83),
            candidate("<b>x</b>", 0.81),
        ],
        "feature_importance": {"tenure": 0.06, "Contract": 0.05, "MonthlyCharges": 0.02},
    }
    return render_training_report(**(arguments | overrides))


@pytest.fixture(scope="module")
def default_training_page() -> str:
    return training_page(champion_prob=scores(600, seed=1)[1])


def test_training_report_is_one_self_contained_document(default_training_page: str) -> None:
    # ROC, precision-recall, calibration, confusion matrix, candidates, feature importance
    assert_self_contained(default_training_page, images=6)
    assert "<title>Churn model &lt;v3&gt;</title>" in default_training_page
    assert "<dt>rows read</dt><dd>21096</dd>" in default_training_page


def test_training_report_states_how_many_customers_the_threshold_flags(
    default_training_page: str,
) -> None:
    assert "150 of 600 (25.0%)" in default_training_page


def test_candidate_names_are_escaped(default_training_page: str) -> None:
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in default_training_page
    assert "<b>x</b>" not in default_training_page


def test_candidates_are_ranked_best_first_with_the_selected_one_marked(
    default_training_page: str,
) -> None:
    rows = re.findall(r'<tr( class="selected")?><td>([^<]+)</td>', default_training_page)

    assert rows == [
        (' class="selected"', "random_forest #1"),
        ("", "random_forest #2"),
        ("", "&lt;b&gt;x&lt;/b&gt;"),
        ("", "logistic_regression"),
    ]


def test_champion_curve_is_overlaid_on_the_roc_plot() -> None:
    y_true, y_prob = scores(300)
    _, champion_prob = scores(300, seed=1)

    def legend(champion: np.ndarray | None) -> list[str]:
        fig = _roc_figure(y_true, y_prob, champion, (0.2, 0.7), "threshold 0.4")
        return [text.get_text() for text in fig.axes[0].get_legend().get_texts()]

    alone, overlaid = legend(None), legend(champion_prob)

    assert len(overlaid) == len(alone) + 1
    assert not any(label.startswith("champion") for label in alone)
    assert any(label.startswith("champion (AUC = ") for label in overlaid)


def test_failed_candidates_and_missing_importances_still_render() -> None:
    failed = candidate("svc", float("nan")) | {"cv_roc_auc_std": None}
    page = training_page(
        candidates=[candidate("random_forest", 0.85, selected=True), failed],
        feature_importance={"tenure": 0.05, "gender": float("nan")},
    )

    assert_self_contained(page, images=6)
    svc_row = next(row for row in page.split("<tr") if "<td>svc</td>" in row)
    assert "nan" not in svc_row.lower()
    assert "\u2014" in svc_row


def test_training_report_without_candidates_or_importances_says_so() -> None:
    page = training_page(candidates=[], feature_importance={})

    assert_self_contained(page, images=4)
    assert "No candidates were recorded." in page
    assert "No feature importance was recorded." in page


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"y_prob": np.full(600, np.nan)}, "y_prob has 600 missing"),
        ({"champion_prob": np.full(599, 0.5)}, "champion_prob has shape"),
        ({"y_true": np.zeros(600)}, "both classes"),
        ({"threshold": 1.5}, "threshold must be"),
    ],
)
def test_training_report_rejects_unusable_inputs(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        training_page(**overrides)


def test_training_report_for_a_full_test_set_stays_small() -> None:
    importances = {f"feature_{i}": 1.0 / (i + 1) for i in range(40)}
    candidates = [candidate(f"model_{i}", 0.80 + i / 100, selected=i == 0) for i in range(8)]

    page = training_page(4000, candidates=candidates, feature_importance=importances)

    assert len(page.encode()) < 1_000_000
    for data in EMBEDDED_PNG.findall(page):
        header = base64.b64decode(data)[:24]  # the IHDR chunk holds width and height
        width, height = int.from_bytes(header[16:20]), int.from_bytes(header[20:24])
        assert width <= 600
        assert height <= 600


def test_html_table_escapes_formats_and_orders_columns() -> None:
    rows: list[dict[str, object]] = [
        {"name": "<i>a</i>", "auc": 0.123456, "rows": 21096, "selected": True},
        {"name": "b", "auc": float("nan"), "extra": {"C": 0.123456, "penalty": "l2"}},
    ]

    table = html_table(rows)

    headers = re.findall(r"<th>(.*?)</th>", table)
    assert headers == ["name", "auc", "rows", "selected", "extra"]
    assert "<td>&lt;i&gt;a&lt;/i&gt;</td>" in table
    assert '<td class="num">0.1235</td>' in table
    assert '<td class="num">21096</td>' in table
    assert "<td>yes</td>" in table
    assert "<td>C=0.1235, penalty=l2</td>" in table
    assert "nan" not in table.lower()
    assert table.count("\u2014") == 4  # the NaN and the three keys a row lacks
    assert re.findall(r"<th>(.*?)</th>", html_table(rows, ["auc", "name"])) == ["auc", "name"]


def test_html_page_escapes_title_headings_and_summary() -> None:
    page = html_page(
        "A & B", [("<Section>", "<p>trusted body</p>")], summary={"reason": "AUC < champion"}
    )

    assert_self_contained(page, images=0)
    assert "<h1>A &amp; B</h1>" in page
    assert "<h2>&lt;Section&gt;</h2>" in page
    assert "<p>trusted body</p>" in page
    assert "<dd>AUC &lt; champion</dd>" in page


def test_figure_to_html_embeds_png_with_escaped_alt_text() -> None:
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [0, 1])
    fig.set_label('ROC "curve"')

    tag = figure_to_html(fig)

    assert tag.endswith('alt="ROC &quot;curve&quot;">')
    assert_self_contained(html_page("t", [("s", tag)]), images=1)


def drift_inputs(n_features: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    features, reference, current = [], {}, {}
    for i in range(n_features):
        name = f"f{i}"
        psi = 0.05 * (n_features - i)
        features.append({"feature": name, "kind": "numeric", "psi": psi, "drifted": psi > 0.2})
        reference[name] = rng.normal(0, 1, 500)
        current[name] = rng.normal(psi, 1, 300)
    return {
        "title": "Drift",
        "summary": {"rows scored": 300},
        "features": features,
        "reference": reference,
        "current": current,
        "threshold": 0.2,
    }


def test_drift_report_marks_drifted_features_in_table_and_chart() -> None:
    inputs = drift_inputs(3)  # f0: PSI 0.15, f1: 0.10, f2: 0.05
    inputs["features"][2] |= {"psi": 0.3, "drifted": True}

    page = render_drift_report(**inputs)

    rows = re.findall(r"<tr( class=\"drifted\")?><td>(f\d)</td>", page)
    assert rows == [(' class="drifted"', "f2"), ("", "f0"), ("", "f1")]
    assert "1 of 3 features are flagged as drifted" in page
    ax = _psi_figure(sorted(inputs["features"], key=lambda f: -f["psi"]), inputs["threshold"]).axes[
        0
    ]
    colours = [to_hex(bar.get_facecolor()) for bar in ax.patches]
    assert colours[0] == WARN.lower()
    assert WARN.lower() not in colours[1:]


def test_drift_report_plots_only_the_most_drifted_features_and_scores() -> None:
    rng = np.random.default_rng(1)
    inputs = drift_inputs(12)

    page = render_drift_report(
        **inputs, reference_scores=rng.random(500), current_scores=rng.random(300)
    )

    # PSI chart, 8 feature distributions, score distribution
    assert_self_contained(page, images=10)
    assert 'alt="f7: reference against current"' in page
    assert 'alt="f8: reference against current"' not in page


def test_drift_report_drops_missing_values_and_handles_string_categories() -> None:
    features: list[dict[str, object]] = [
        {"feature": "tenure", "kind": "numeric", "psi": 0.4, "drifted": True},
        {"feature": "Contract", "kind": "categorical", "psi": 0.25, "drifted": True},
        {"feature": "SeniorCitizen", "kind": "numeric", "psi": None, "drifted": False},
        {"feature": "TotalCharges", "kind": "numeric", "psi": float("nan"), "drifted": False},
        {"feature": "only_in_reference", "kind": "numeric", "psi": 0.01, "drifted": False},
    ]
    reference = {
        "tenure": [1, 5, None, 30, float("nan"), 72],
        "Contract": np.array(["Month-to-month", "One year", None, "Two year"], dtype=object),
        "SeniorCitizen": np.array([0, 1, 0, 0]),
        "TotalCharges": np.array([np.nan, 20.5, 1000.0, 3500.0]),
        "only_in_reference": [1.0, 2.0],
    }
    current = {
        "tenure": np.array([1.0, 2.0, np.nan]),
        "Contract": ["Month-to-month", float("nan"), "Month-to-month", None],
        "SeniorCitizen": [1, None, 1],
        "TotalCharges": [None, None, float("nan")],
    }

    page = render_drift_report(
        title="Drift",
        summary={},
        features=features,
        reference=reference,
        current=current,
        threshold=0.2,
        reference_scores=np.array([0.1, np.nan, 0.7]),
        current_scores=np.array([0.2, 0.9]),
    )

    # PSI chart, 4 features present on both sides, score distribution
    assert_self_contained(page, images=6)
    assert "<td>only_in_reference</td>" in page
    assert 'alt="only_in_reference: reference against current"' not in page


def test_category_shares_ignore_missing_values() -> None:
    feature = {"feature": "Contract", "kind": "categorical", "psi": 0.1, "drifted": False}

    fig = _distribution_figure(
        feature, ["One year", None, "Two year", float("nan")], ["One year", None]
    )

    labels = [label.get_text() for label in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == ["One year", "Two year"]
