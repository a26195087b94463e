"""Benchmark: this project's training against FLAML (an AutoML library) given 60 s.

    pip install -e '.[bench]'
    python bench/bench_automl.py [--splits 5] [--rows 21096] [--flaml-seconds 60]

On generated customers, `--splits` customer-disjoint tables (no customer in two) are each
split into training and test customers (the persistent holdout, as the pipeline does). On
each, the project's training (the candidate search, calibration and final fit the training
step runs, with its settings) and FLAML (`metric="roc_auc"`, `time_budget` seconds) train
on the same training customers and are scored on the same test customers: test ROC-AUC,
expected calibration error (10 bins) and training wall time, side by side, and the paired
differences with their mean and range. The machine's load average is printed with it:
both run in this one process, one after the other, so they share whatever else runs.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.split import split_holdout
from components.data.validate import validate
from components.model.evaluate import expected_calibration_error
from components.model.predict import predict_probability
from components.model.search import search_candidates, select_best
from components.model.train import fit_calibrator, fit_final
from components.settings import Settings


def train_ours(train: pd.DataFrame, settings: Settings):
    """The training step's model (`components.model.train.train_candidates` without KFP)."""
    results = search_candidates(
        train,
        n_folds=settings.cv_folds,
        seed=settings.seed,
        candidates_per_family=settings.candidates_per_family,
        budget_seconds=settings.search_budget_seconds,
        resampling=settings.resampling,
        metric=settings.promotion_metric,
    )
    best = select_best(results, settings.promotion_metric)
    calibrator, _ = fit_calibrator(
        train, best, method=settings.calibration, n_folds=settings.cv_folds, seed=settings.seed
    )
    model = fit_final(train, best, seed=settings.seed, calibrator=calibrator)
    return lambda frame: predict_probability(model, frame), best.family


def _flaml_frame(frame: pd.DataFrame) -> pd.DataFrame:
    features = frame[TELCO_CHURN.feature_names].copy()
    for name in features.columns:
        if not pd.api.types.is_numeric_dtype(features[name]):
            features[name] = features[name].astype("category")
    return features


def train_flaml(train: pd.DataFrame, seconds: float, seed: int):
    from flaml import AutoML

    automl = AutoML()
    automl.fit(
        _flaml_frame(train),
        train[TELCO_CHURN.label_column].to_numpy(),
        task="classification",
        metric="roc_auc",
        time_budget=seconds,
        seed=seed,
        verbose=0,
        n_jobs=2,
    )
    return lambda frame: automl.predict_proba(_flaml_frame(frame))[:, 1], automl.best_estimator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--rows", type=int, default=21_096, help="customers per split")
    parser.add_argument("--flaml-seconds", type=float, default=60.0)
    args = parser.parse_args()
    console = Console()
    settings = Settings()
    everyone = validate(
        generate_customers(args.rows * args.splits, seed=2026, messy=False), source="generated"
    ).clean
    rows = []
    for split in range(args.splits):
        table = everyone.iloc[split * args.rows : (split + 1) * args.rows]
        train, test = split_holdout(table, salt=f"bench-{split}", share=settings.holdout_share)
        label = test[TELCO_CHURN.label_column].to_numpy()
        row = {"split": split, "load": round(os.getloadavg()[0], 1)}
        for name, trainer in (
            ("ours", lambda t: train_ours(t, settings)),
            ("flaml", lambda t, seed=split: train_flaml(t, args.flaml_seconds, seed)),
        ):
            started = time.perf_counter()
            predict, chosen = trainer(train)
            row[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
            probability = predict(test)
            row[f"{name}_roc_auc"] = round(float(roc_auc_score(label, probability)), 4)
            row[f"{name}_ece"] = round(expected_calibration_error(label, probability), 4)
            row[f"{name}_model"] = str(chosen)
        rows.append(row)
        console.print(json.dumps(row))

    out = Table(title=f"project vs FLAML ({args.flaml_seconds:.0f} s), {args.rows:,} customers")
    for column in ("split", "load", "ours AUC", "FLAML AUC", "Δ AUC", "ours ECE", "FLAML ECE",
                   "ours s", "FLAML s", "ours model", "FLAML model"):  # fmt: skip
        out.add_column(column, justify="right")
    for r in rows:
        out.add_row(
            str(r["split"]), str(r["load"]), f"{r['ours_roc_auc']:.4f}",
            f"{r['flaml_roc_auc']:.4f}", f"{r['ours_roc_auc'] - r['flaml_roc_auc']:+.4f}",
            f"{r['ours_ece']:.4f}", f"{r['flaml_ece']:.4f}", f"{r['ours_seconds']:.0f}",
            f"{r['flaml_seconds']:.0f}", r["ours_model"], r["flaml_model"],
        )  # fmt: skip
    console.print(out)
    difference = np.array([r["ours_roc_auc"] - r["flaml_roc_auc"] for r in rows])
    console.print(
        f"paired ROC-AUC difference (ours - FLAML): mean {difference.mean():+.4f}, "
        f"range {difference.min():+.4f} to {difference.max():+.4f}, "
        f"ours ahead on {(difference >= 0).sum()} of {len(rows)} splits; "
        f"ECE mean ours {np.mean([r['ours_ece'] for r in rows]):.4f}, "
        f"FLAML {np.mean([r['flaml_ece'] for r in rows]):.4f}; training seconds mean ours "
        f"{np.mean([r['ours_seconds'] for r in rows]):.0f}, "
        f"FLAML {np.mean([r['flaml_seconds'] for r in rows]):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
