"""Benchmark: the whole local training run on generated customers.

    python bench/bench_training.py [--rows 21096]

Runs `submit.py train` (the real pipeline under kfp.local, one process per step) on a fresh
home and prints wall time per step, total, and peak memory of the largest process. As a
baseline measured in the same run, the same stage functions are called in one plain Python
process with no orchestration; the ratio is what KFP's per-step processes cost.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

IN_PROCESS = """
import sys, time, json
from pathlib import Path
t0 = time.perf_counter()
from components.warehouse import read_table
from components.data.validate import validate
from components.data.split import split_train_test
from components.model.search import search_candidates, select_best, choose_threshold
from components.model.train import fit_calibrator, fit_final
from components.model.evaluate import bootstrap_interval, classification_metrics, feature_importance
from components.model.predict import predict_probability
from components.reports.training_report import render_training_report
from components.settings import Settings
s = Settings()
frame = read_table(sys.argv[1])
clean = validate(frame, source=sys.argv[1]).clean
train, test = split_train_test(clean, test_size=s.test_size, seed=s.seed)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=21_096)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        data = Path(tmp) / "customers.parquet"
        from components.data.sample_data import generate_customers

        generate_customers(args.rows, seed=42).to_parquet(data, index=False)

        peak_file = Path(tmp) / "peak"
        baseline, baseline_wall, baseline_peak = _measured(
            [sys.executable, "-c", IN_PROCESS, str(data)], peak_file
        )
        run, pipeline_wall, pipeline_peak = _measured(
            [sys.executable, "submit.py", "train", "--local", "--json",
             "--home", str(home), "--source", str(data)],
            peak_file,
        )  # fmt: skip
        for result in (baseline, run):
            if result.returncode:
                console.print(result.stderr)
                return 1
        baseline_result = json.loads(baseline.stdout.strip().splitlines()[-1])
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        record = json.loads((home / "runs" / f"{summary['run_id']}.json").read_text())

    table = Table(title=f"local training run, {args.rows:,} rows")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for step, seconds in record["step_seconds"].items():
        table.add_row(step, f"{seconds:.1f}", f"{seconds / pipeline_wall:.0%}")
    table.add_row("[bold]submit.py train, total", f"[bold]{pipeline_wall:.1f}", "100%")
    table.add_row(
        "baseline: same functions, one process",
        f"{baseline_wall:.1f}",
        f"{baseline_wall / pipeline_wall:.0%}",
    )
    console.print(table)
    console.print(
        f"pipeline / baseline wall time: {pipeline_wall / baseline_wall:.2f}x; "
        f"peak memory of the largest process: {pipeline_peak:.0f} MiB "
        f"(baseline {baseline_peak:.0f} MiB); "
        f"test ROC-AUC {summary['metrics']['roc_auc']:.3f} "
        f"(baseline {baseline_result['roc_auc']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
