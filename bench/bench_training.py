"""Benchmark: the whole local training run on generated customers.

    python bench/bench_training.py [--rows 21096 200000 1000000] [--no-baseline]

Runs `submit.py train` (the real pipeline under kfp.local, one process per step) on a fresh
home and prints wall time per step, total, and peak memory of the largest process, and the
test ROC-AUC beside the best reachable on the same test customers: that of the generator's
own churn score (its logit without the noise no model can see; a ranking, so the AUC of the
best possible probabilities). As a baseline measured in the same run, the same stage
functions are called in one plain Python process with no orchestration; the ratio is what
KFP's per-step processes cost. The machine's load average is printed beside each size.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

IN_PROCESS = """
import sys, time, json
from pathlib import Path
t0 = time.perf_counter()
from components.warehouse import read_table
from components.data.validate import validate
from components.data.split import split_holdout
from components.model.search import search_candidates, select_best, choose_threshold
from components.model.train import fit_calibrator, fit_final
from components.model.evaluate import bootstrap_interval, classification_metrics, feature_importance
from components.model.predict import predict_probability
from components.reports.training_report import render_training_report
from components.settings import Settings
s = Settings()
frame = read_table(sys.argv[1])
clean = validate(frame, source=sys.argv[1]).clean
train, test = split_holdout(clean, salt=s.holdout_salt, share=s.holdout_share)
results = search_candidates(train, n_folds=s.cv_folds, seed=s.seed,
    candidates_per_family=s.candidates_per_family, budget_seconds=s.search_budget_seconds,
    resampling=s.resampling, metric=s.promotion_metric)
best = select_best(results, s.promotion_metric)
calibrator, _ = fit_calibrator(train, best, method=s.calibration, n_folds=s.cv_folds, seed=s.seed)
oof = best.oof_probability if calibrator is None else calibrator.transform(best.oof_probability)
threshold = choose_threshold(train["Churn"].to_numpy(), oof)
model = fit_final(train, best, seed=s.seed, calibrator=calibrator)
probability = predict_probability(model, test)
raw = predict_probability(model, test, calibrated=False)
metrics = classification_metrics(test["Churn"].to_numpy(), probability, threshold)
bootstrap_interval(s.promotion_metric, test["Churn"].to_numpy(), probability, threshold,
    samples=s.bootstrap_samples, seed=s.seed)
importance = feature_importance(model, test, seed=s.seed)
render_training_report(title="bench", summary={}, y_true=test["Churn"].to_numpy(),
    y_prob=probability, threshold=threshold, candidates=[r.summary() for r in results],
    feature_importance=importance, y_prob_raw=raw)
print(json.dumps({"seconds": time.perf_counter() - t0, "roc_auc": metrics["roc_auc"]}))
"""


# Runs a command and reports the peak RSS of its largest process (itself or a descendant).
_PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def _measured(
    command: list[str], peak_file: Path
) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, wall seconds, peak MiB of the largest process) of `command` run in ROOT."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, str(peak_file), *command],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    return result, wall, int(peak_file.read_text()) / 1024


def best_reachable_score(frame: "pd.DataFrame") -> "np.ndarray":
    """The generator's churn logit of each (validated) customer without its noise term: the
    best any model can rank them (a customer with tenure 0 never churns)."""
    import numpy as np

    from components.data import sample_data as g

    def code(column: str, labels: tuple[str, ...]) -> np.ndarray:
        return frame[column].map({label: i for i, label in enumerate(labels)}).to_numpy(int)

    tenure = frame["tenure"].to_numpy(float)
    logit = (
        g._CHURN_INTERCEPT
        + g._CHURN_CONTRACT[code("Contract", g._CONTRACT)]
        + g._CHURN_INTERNET[code("InternetService", g._INTERNET)]
        + g._CHURN_PAYMENT[code("PaymentMethod", g._PAYMENT)]
        + g._CHURN_LOG_TENURE * np.log1p(tenure)
        + g._CHURN_PER_DOLLAR * (frame["MonthlyCharges"].to_numpy(float) - 65.0)
        + g._CHURN_SENIOR * frame["SeniorCitizen"].to_numpy(float)
        + g._CHURN_PAPERLESS * (frame["PaperlessBilling"] == "Yes").to_numpy()
        + g._CHURN_PARTNER * (frame["Partner"] == "Yes").to_numpy()
        + g._CHURN_DEPENDENTS * (frame["Dependents"] == "Yes").to_numpy()
        + sum(w * (frame[name] == "Yes").to_numpy() for name, w in g._CHURN_ADD_ON.items())
    )
    return np.where(tenure > 0, logit, -1e9)


def best_reachable_auc(data: Path) -> float:
    """ROC-AUC of `best_reachable_score` on the test set the pipeline holds out."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from components.data.split import split_holdout
    from components.data.validate import validate
    from components.settings import Settings

    settings = Settings()
    clean = validate(pd.read_parquet(data), source=str(data)).clean
    _, test = split_holdout(clean, salt=settings.holdout_salt, share=settings.holdout_share)
    return float(roc_auc_score(test["Churn"], best_reachable_score(test)))


def run_size(rows: int, baseline_too: bool, console: Console) -> dict | None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        data = Path(tmp) / "customers.parquet"
        from components.data.sample_data import generate_customers

        generate_customers(rows, seed=42).to_parquet(data, index=False)
        best = best_reachable_auc(data)

        peak_file = Path(tmp) / "peak"
        baseline_wall = baseline_peak = None
        if baseline_too:
            baseline, baseline_wall, baseline_peak = _measured(
                [sys.executable, "-c", IN_PROCESS, str(data)], peak_file
            )
            if baseline.returncode:
                console.print(baseline.stderr)
                return None
        run, pipeline_wall, pipeline_peak = _measured(
            [sys.executable, "submit.py", "train", "--local", "--json",
             "--home", str(home), "--source", str(data)],
            peak_file,
        )  # fmt: skip
        if run.returncode:
            console.print(run.stderr)
            return None
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        record = json.loads((home / "runs" / f"{summary['run_id']}.json").read_text())

    table = Table(title=f"local training run, {rows:,} rows")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for step, seconds in record["step_seconds"].items():
        table.add_row(step, f"{seconds:.1f}", f"{seconds / pipeline_wall:.0%}")
    table.add_row("[bold]submit.py train, total", f"[bold]{pipeline_wall:.1f}", "100%")
    if baseline_wall is not None:
        table.add_row(
            "baseline: same functions, one process",
            f"{baseline_wall:.1f}",
            f"{baseline_wall / pipeline_wall:.0%}",
        )
    console.print(table)
    skipped = [c for c in summary["cv"] if "skipped" in c]
    subsampled = [c for c in summary["cv"] if c.get("train_rows")]
    for c in skipped:
        console.print(f"skipped {c['model']}: {c['skipped']}")
    for c in subsampled:
        console.print(f"{c['model']} {c['params']}: {c['note']}")
    load_after = os.getloadavg()
    result = {
        "rows": rows,
        "seconds": round(pipeline_wall, 1),
        "peak_mib": round(pipeline_peak),
        "roc_auc": summary["metrics"]["roc_auc"],
        "best_reachable_roc_auc": round(best, 4),
        "gap": round(best - summary["metrics"]["roc_auc"], 4),
        "best_model": summary["best_model"],
        "load": [round(load_before[0], 1), round(load_after[0], 1)],
    }
    if baseline_wall is not None:
        result |= {
            "baseline_seconds": round(baseline_wall, 1),
            "baseline_peak_mib": round(baseline_peak),
        }
    console.print(json.dumps(result))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[21_096])
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false",
        help="skip the in-process baseline (it doubles the time at large sizes)",
    )  # fmt: skip
    args = parser.parse_args()
    console = Console()
    results = [run_size(rows, args.baseline, console) for rows in args.rows]
    if None in results:
        return 1
    table = Table(title="training run by size (load average before / after)")
    for column in (
        "rows",
        "seconds",
        "peak MiB",
        "ROC-AUC",
        "best reachable",
        "gap",
        "model",
        "load",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r['rows']:,}", f"{r['seconds']:.0f}", f"{r['peak_mib']:,}", f"{r['roc_auc']:.4f}",
            f"{r['best_reachable_roc_auc']:.4f}", f"{r['gap']:+.4f}", r["best_model"],
            f"{r['load'][0]} / {r['load'][1]}",
        )  # fmt: skip
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
