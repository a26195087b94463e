"""Reason codes: what they cost, and the tree attributions of our kernel against `shap`'s.

    python bench/bench_reasons.py                 # 1M-customer runs, 200,000-row steps, 300 served
    python bench/bench_reasons.py --rows 50000 --json
    python bench/bench_reasons.py --parts runs --run-rows 1000000   # whole scoring runs only

Cost (issue 21's targets, as ratios measured in one run, so both sides of a ratio see the
same machine: runs alternate, and each figure is the least of `--repeats` runs, as other
processes on a shared machine only ever lengthen a run):
- a scoring run with reasons for the default tiers (`high_medium`) against none: at most
  1.25; measured twice: the scoring step's work alone (`stage_scores`, one process: read
  batches, validate, score, stage), and with publishing after it (DuckDB and the CSV
  export, `publish_scores`), as steps 2 and 3 of the pipeline do (without their process
  start-up, which would only add the same time to both);
- with reasons for every customer against none: at most 3;
- both again for the whole scoring run as a user runs it (`--parts runs`): the real
  `submit.py score --local --json` on the embedded warehouse of a fresh home holding
  `--run-rows` generated customers, every step in its own process (start-up, validation,
  scoring, publishing to DuckDB and the CSV, drift, report), wall time of the command;
  the champion is what `submit.py train --local` picks on the default sample first;
- one served instance (the predictor's calls per request, in process: the server's HTTP
  handling would only add the same time to both) with reasons against without: under 2.

Library against kernel, on the gradient-boosting champion's preprocessed rows:
- `shap.TreeExplainer` (path-dependent Shapley values, its C++ tree walker);
- `components.model.reasons` (path attributions on the compiled kernel's flat trees).
For each: rows per second, and exactness, the largest gap between the attributions plus
the base value and the model's raw score (log-odds); and how often the two name the same
strongest reason. `shap` is a benchmark-only dependency (the `bench` extra).

The champion is fitted as `bench_scoring.py` fits it, then calibrated (sigmoid) on held-out
rows, so the tiers have the sizes a calibrated champion gives them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.split import split_train_test
from components.data.validate import validate
from components.model.calibration import CalibratedModel, ProbabilityCalibrator
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("scoring", "runs", "serving", "kernel")
PARAMS = {"learning_rate": 0.05, "max_leaf_nodes": 15, "l2_regularization": 1.0}
BATCH_ROWS = 100_000


def champion():
    """A calibrated gradient-boosting champion on 21,096 generated customers."""
    from sklearn.pipeline import Pipeline

    clean = validate(generate_customers(21_096, seed=1), source="generated").clean
    train, test = split_train_test(clean, test_size=0.2, seed=1)
    best = CandidateResult("gradient_boosting", PARAMS, [], [], np.empty(0), 0.0)
    model = fit_final(train, best, seed=1)
    raw = model.predict_proba(test[TELCO_CHURN.feature_names])[:, 1]
    calibrator = ProbabilityCalibrator("sigmoid").fit(raw, test[TELCO_CHURN.label_column])
    return Pipeline([("preprocess", model[0]), ("model", CalibratedModel(model[1], calibrator))])


def scoring_costs(model, rows: int, repeats: int) -> dict[str, Any]:
    """Seconds per scoring run for each `reasons_for`, alternated, least of `repeats`."""
    from components.scoring.chunked import stage_scores
    from components.scoring.publish import publish_scores
    from components.scoring.staged import ScoringJob

    settings = Settings()
    customers = generate_customers(rows, seed=2).drop(columns=TELCO_CHURN.label_column)
    batches = pa.Table.from_pandas(customers, preserve_index=False).to_batches(BATCH_ROWS)
    times: dict[str, list[float]] = {"none": [], "high_medium": [], "all": []}
    published: dict[str, list[float]] = {k: [] for k in times}
    tiers: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats + 1):  # the first round warms caches, not counted
            for reasons_for in times:
                job = ScoringJob(
                    source="bench",
                    threshold=0.5,
                    high=settings.high_risk_cutoff,
                    medium=settings.medium_risk_cutoff,
                    model_version=1,
                    as_of=date(2026, 12, 7),
                    scored_at=datetime(2026, 12, 7, tzinfo=UTC),
                    run_id="bench",
                    reasons_for=reasons_for,
                )
                directory = Path(scratch) / f"{reasons_for}-{repeat}"
                output = f"duckdb://{scratch}/{reasons_for}.duckdb?table=churn_predictions"
                started = time.perf_counter()
                run = stage_scores(batches, model, job, directory, tolerance=0.05)
                staged = time.perf_counter()
                publish_scores(
                    directory, output_uri=output, as_of=job.as_of, export_dir=directory / "csv"
                )
                if repeat:
                    times[reasons_for].append(staged - started)
                    published[reasons_for].append(time.perf_counter() - started)
                tiers = run.tiers
    seconds = {k: min(v) for k, v in times.items()}
    with_publish = {k: min(v) for k, v in published.items()}
    return {
        "rows": rows,
        "tiers": tiers,
        "seconds": seconds,
        "high_medium_ratio": seconds["high_medium"] / seconds["none"],
        "all_ratio": seconds["all"] / seconds["none"],
        "with_publish_seconds": with_publish,
        "with_publish_high_medium_ratio": with_publish["high_medium"] / with_publish["none"],
        "with_publish_all_ratio": with_publish["all"] / with_publish["none"],
    }


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _explained(warehouse: Path) -> int:
    """Predictions with reason codes in the embedded warehouse: proof that the run's
    `reasons_for` reached its scoring step."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as connection:
        query = "SELECT count(reason_1) FROM churn_predictions"
        return connection.execute(query).fetchone()[0]


def whole_runs(rows: int, repeats: int) -> dict[str, Any]:
    """Wall seconds of `submit.py score` for each `reasons_for`, alternated, least of
    `repeats`, with the load average before each run."""
    from components.warehouse import write_table

    reasons_for = ("none", "high_medium", "all")
    times: dict[str, list[float]] = {k: [] for k in reasons_for}
    loads: dict[str, list[float]] = {k: [] for k in reasons_for}
    tiers: dict[str, int] = {}
    explained: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}

        def submit(command: str, setting: str = "high_medium") -> tuple[dict[str, Any], float]:
            arguments = [command, "--local", "--json", "--home", str(home)]
            if command == "score":
                arguments += ["--as-of", "2026-12-07"]
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "submit.py", *arguments],
                cwd=ROOT, capture_output=True, text=True,
                env=environment | {"CHURN_REASONS_FOR": setting},
            )  # fmt: skip
            seconds = time.perf_counter() - started
            if done.returncode:
                raise SystemExit(f"submit.py {command} failed:\n{done.stderr}")
            return json.loads(done.stdout.strip().splitlines()[-1]), seconds

        submit("train")  # the default sample, and its champion
        write_table(generate_customers(rows, seed=2), Settings(home=home).source_uri)
        for repeat in range(repeats + 1):  # the first round warms caches, not counted
            for setting in reasons_for:
                load = _load()
                summary, seconds = submit("score", setting)
                if repeat:
                    times[setting].append(seconds)
                    loads[setting].append(load)
                tiers = summary["tiers"]
                explained[setting] = _explained(Settings(home=home).warehouse_path)
    seconds = {k: min(v) for k, v in times.items()}
    return {
        "rows": rows,
        "tiers": tiers,
        "explained": explained,
        "seconds": seconds,
        "all_seconds": times,
        "load_before": loads,
        "high_medium_ratio": seconds["high_medium"] / seconds["none"],
        "all_ratio": seconds["all"] / seconds["none"],
    }


def serving_cost(model, requests: int) -> dict[str, float]:
    """Seconds per one-instance request through the predictor, with and without reasons,
    alternated."""
    from components.registry import LocalRegistry, save_model
    from components.serving.server import ChurnPredictor

    customers = generate_customers(requests, seed=3).drop(columns=TELCO_CHURN.label_column)
    customers = customers.astype(object)
    instances = customers.where(customers.notna(), None).to_dict("records")
    with tempfile.TemporaryDirectory() as scratch:
        registry = LocalRegistry(Path(scratch) / "registry")
        entry = registry.register(
            save_model(model, Path(scratch) / "build").parent,
            best_model="gradient_boosting",
            threshold=0.5,
            metrics={},
            data_fingerprint="bench",
            run_id="bench",
        )
        predictor = ChurnPredictor()
        predictor.load(str(registry.model_path(entry.version).parent))
    plain = [json.loads(json.dumps({"instances": [i]})) for i in instances]
    asking = [
        json.loads(json.dumps({"instances": [i], "parameters": {"reasons": True}}))
        for i in instances
    ]

    def call(body: dict[str, Any]) -> float:
        started = time.perf_counter()
        predictor.postprocess(predictor.predict(predictor.preprocess(body)))
        return time.perf_counter() - started

    for body in plain[:20] + asking[:20]:
        call(body)
    without, with_reasons = [], []
    for a, b in zip(plain, asking, strict=True):
        without.append(call(a))
        with_reasons.append(call(b))
    p50 = statistics.median(without), statistics.median(with_reasons)
    return {
        "requests": requests,
        "without_ms": p50[0] * 1000,
        "with_reasons_ms": p50[1] * 1000,
        "ratio": p50[1] / p50[0],
    }


def library_against_kernel(model, rows: int) -> dict[str, Any]:
    """`shap.TreeExplainer` against the kernel's path attributions on the same rows."""
    import shap
    from scipy.special import logit

    from components.model.predict import compiled_trees
    from components.model.reasons import _column_groups, _tree_explainer

    customers = validate(generate_customers(rows, seed=4), source="bench").clean
    x = model[0].transform(customers[TELCO_CHURN.feature_names])
    estimator = model[-1].estimator
    raw = logit(estimator.predict_proba(x)[:, 1])
    result: dict[str, Any] = {"rows": rows}

    # Per column, as shap attributes them.
    kernel = _tree_explainer(compiled_trees(estimator), lambda r: r, np.arange(x.shape[1]))
    kernel.raw(x[:10])  # compiled (numba) before it is timed
    started = time.perf_counter()
    _kernel_raw, kernel_effects = kernel.raw(x)
    seconds = time.perf_counter() - started
    result["kernel"] = {
        "rows_per_second": rows / seconds,
        "largest_gap": float(np.abs(kernel_effects.sum(axis=1) + kernel.raw_baseline - raw).max()),
    }

    started = time.perf_counter()
    explainer = shap.TreeExplainer(estimator)
    build = time.perf_counter() - started
    started = time.perf_counter()
    values = np.asarray(explainer.shap_values(x, check_additivity=False))
    seconds = time.perf_counter() - started
    base = float(np.ravel(explainer.expected_value)[-1])
    if values.ndim == 3:  # one array per class
        values = values[..., -1]
    result["shap"] = {
        "version": shap.__version__,
        "rows_per_second": rows / seconds,
        "build_seconds": build,
        "largest_gap": float(np.abs(values.sum(axis=1) + base - raw).max()),
    }
    result["same_strongest_column"] = float(
        np.mean(np.argmax(values, axis=1) == np.argmax(kernel_effects, axis=1))
    )
    # By original feature, as reasons are given: one-hot columns summed.
    groups, _ = _column_groups(model)
    membership = (groups[:, None] == np.arange(groups.max() + 1)).astype(float)
    by_feature = values @ membership, kernel_effects @ membership
    result["same_strongest_feature"] = float(
        np.mean(np.argmax(by_feature[0], axis=1) == np.argmax(by_feature[1], axis=1))
    )
    top3 = [set(row) for row in np.argsort(-by_feature[0], axis=1)[:, :3]]
    ours = [set(row) for row in np.argsort(-by_feature[1], axis=1)[:, :3]]
    result["same_top3_features"] = float(np.mean([a == b for a, b in zip(top3, ours, strict=True)]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="per scoring run")
    parser.add_argument("--requests", type=int, default=300, help="served instances")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting")
    parser.add_argument("--explain-rows", type=int, default=20_000, help="library vs kernel")
    parser.add_argument(
        "--run-rows", type=int, default=1_000_000, help="customers per whole scoring run"
    )
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    results: dict[str, Any] = {"load_at_start": _load()}
    if "runs" in args.parts:  # its own processes, each with the settings a user's run has
        results["runs"] = whole_runs(args.run_rows, args.repeats)
    with threadpool_limits(limits=1):  # as a scoring worker runs
        model = champion() if {"scoring", "serving", "kernel"} & set(args.parts) else None
        if "scoring" in args.parts:
            results["scoring"] = scoring_costs(model, args.rows, args.repeats)
            results["scoring"]["load_after"] = _load()
        if "serving" in args.parts:
            results["serving"] = serving_cost(model, args.requests)
        if "kernel" in args.parts:
            results["library_against_kernel"] = library_against_kernel(model, args.explain_rows)
    results["load_at_end"] = _load()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"load average {results['load_at_start']} at the start, {results['load_at_end']} at the end"
    )
    if runs := results.get("runs"):
        print(
            f"whole scoring runs (submit.py score), {runs['rows']:,} customers, tiers "
            f"{runs['tiers']}, explained {runs['explained']}: seconds {runs['seconds']}, "
            f"load before each {runs['load_before']}"
        )
        print(f"  reasons for high+medium / none: {runs['high_medium_ratio']:.2f} (target <= 1.25)")
        print(f"  reasons for all / none:         {runs['all_ratio']:.2f} (target <= 3)")
    if scoring := results.get("scoring"):
        print(
            f"scoring step's work, {scoring['rows']:,} rows in one process, tiers "
            f"{scoring['tiers']}: seconds {scoring['seconds']}"
        )
        print(f"  reasons for high+medium / none: {scoring['high_medium_ratio']:.2f}")
        print(f"  reasons for all / none:         {scoring['all_ratio']:.2f}")
        print(
            "  with publishing (DuckDB + CSV), as the pipeline's steps 2-3: high+medium "
            f"{scoring['with_publish_high_medium_ratio']:.2f}, all "
            f"{scoring['with_publish_all_ratio']:.2f}; seconds {scoring['with_publish_seconds']}"
        )
    if serving := results.get("serving"):
        print(
            f"serving one instance: {serving['without_ms']:.2f} ms without, "
            f"{serving['with_reasons_ms']:.2f} ms with reasons: {serving['ratio']:.2f} (target < 2)"
        )
    if "library_against_kernel" not in results:
        return 0
    versus = results["library_against_kernel"]
    for name in ("kernel", "shap"):
        figures = versus[name]
        print(
            f"{name}: {figures['rows_per_second']:,.0f} rows/s, largest additivity gap "
            f"{figures['largest_gap']:.1e}"
        )
    print(
        f"same strongest column: {versus['same_strongest_column']:.1%}; same strongest "
        f"feature: {versus['same_strongest_feature']:.1%}; same top 3 features: "
        f"{versus['same_top3_features']:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
