"""Benchmark: are the published probabilities honest? Today's model against the calibrated one.

    python bench/bench_calibration.py [--rows 21096] [--seed 42]

On generated customers (`components.data.sample_data`), a share of the customers is first set
aside as a customer-disjoint holdout (grouped as the split groups them, so no customer or
copy of one is on both sides); the rest goes through the training pipeline's own functions:
validate, split, candidate search, selection, calibration, refit. Two models come out of
two searches on the same folds:
- today's: SMOTE, selected by CV ROC-AUC, uncalibrated (what `main` publishes);
- the new one: resampling and calibration chosen by CV (`Settings()` defaults).
Both are scored on the test split and on the holdout, which training never saw; printed are
the mean published probability against the actual churn rate, expected calibration error
(10 bins), Brier score and ROC-AUC, and the new model's figures beside today's.
"""

import argparse
import json
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from components.data.sample_data import generate_customers
from components.data.split import leakage_groups, split_train_test
from components.data.validate import validate
from components.model.evaluate import calibration_metrics, classification_metrics
from components.model.predict import predict_probability
from components.model.search import choose_threshold, search_candidates, select_best
from components.model.train import fit_calibrator, fit_final
from components.settings import Settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=21_096)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout", type=float, default=0.2, help="share of customers")
    args = parser.parse_args()
    settings = Settings()
    console = Console(width=120)

    clean = validate(generate_customers(args.rows, seed=args.seed), source="generated").clean
    groups = leakage_groups(clean)
    rng = np.random.default_rng(args.seed)
    unique = np.unique(groups)
    held_groups = rng.choice(unique, int(args.holdout * len(unique)), replace=False)
    in_holdout = np.isin(groups, held_groups)
    holdout, rest = clean[in_holdout], clean[~in_holdout]
    assert not set(holdout["customerID"]) & set(rest["customerID"])
    train, test = split_train_test(rest, test_size=settings.test_size, seed=settings.seed)
    label = train["Churn"].to_numpy()

    searches = {}
    for name, resampling, metric in (
        ("today", "smote", "roc_auc"),
        ("new", settings.resampling, settings.promotion_metric),
    ):
        started = time.perf_counter()
        results = search_candidates(
            train,
            n_folds=settings.cv_folds,
            seed=settings.seed,
            candidates_per_family=settings.candidates_per_family,
            budget_seconds=settings.search_budget_seconds,
            resampling=resampling,
            metric=metric,
        )
        searches[name] = (select_best(results, metric), time.perf_counter() - started)
    (today_best, today_seconds), (new_best, new_seconds) = searches["today"], searches["new"]
    calibrator, brier = fit_calibrator(
        train, new_best, method=settings.calibration, n_folds=settings.cv_folds, seed=settings.seed
    )
    models = {
        "today": (
            fit_final(train, today_best, seed=settings.seed),
            choose_threshold(label, today_best.oof_probability),
        ),
        "new": (
            fit_final(train, new_best, seed=settings.seed, calibrator=calibrator),
            choose_threshold(label, calibrator.transform(new_best.oof_probability)),
        ),
    }

    figures: dict[str, dict[str, dict[str, float]]] = {}
    for where, frame in (("test split", test), ("holdout", holdout)):
        truth = frame["Churn"].to_numpy()
        for name, (model, threshold) in models.items():
            probability = predict_probability(model, frame)
            figures.setdefault(where, {})[name] = classification_metrics(
                truth, probability, threshold
            ) | calibration_metrics(truth, probability)

    table = Table(title=f"published probabilities, {args.rows:,} generated customers")
    for column in ("rows", "model", "mean prob", "churn rate", "|gap|", "ECE", "Brier", "ROC-AUC"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for where, by_model in figures.items():
        n = len(test) if where == "test split" else len(holdout)
        for name, m in by_model.items():
            gap = abs(m["mean_probability"] - m["churn_rate"])
            table.add_row(
                f"{where} ({n:,})", name, f"{m['mean_probability']:.4f}", f"{m['churn_rate']:.4f}",
                f"{gap:.4f}", f"{m['ece']:.4f}", f"{m['brier']:.4f}", f"{m['roc_auc']:.4f}",
            )  # fmt: skip
    console.print(table)
    console.print(
        f"today: {today_best.family} with SMOTE, uncalibrated; new: {new_best.family} with "
        f"{new_best.resampling}, {calibrator.method} calibration (CV Brier "
        f"{', '.join(f'{m} {b:.4f}' for m, b in brier.items())})"
    )
    console.print(
        f"search wall time new / today {new_seconds / today_seconds:.2f}x "
        f"({new_seconds:.0f}s / {today_seconds:.0f}s)"
    )
    for where, by_model in figures.items():
        new, today = by_model["new"], by_model["today"]
        console.print(
            f"{where}: ROC-AUC new - today {new['roc_auc'] - today['roc_auc']:+.4f}; "
            f"ECE new / today {new['ece'] / today['ece']:.2f}x; "
            f"mean probability - churn rate: new {new['mean_probability'] - new['churn_rate']:+.4f}"
            f", today {today['mean_probability'] - today['churn_rate']:+.4f}"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
