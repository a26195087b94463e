"""Serving benchmark: latency of one-instance prediction requests per model family.

    python bench/bench_serving.py                    # every family, 300 requests each
    python bench/bench_serving.py --family gradient_boosting --requests 1000

For each family a model is fitted on generated customers (`fit_final`, as training does),
registered in a throwaway registry and served by the real model server
(`components.serving.start_model_server`, what `submit.py serve` and the serving image
run) on 127.0.0.1. One client then sends one-instance requests back to back, each a
different generated customer, and records the round trip; 16 clients at once measure
throughput. The baseline, measured in the same run against the same server, is the health
route's round trip: the HTTP and server floor that a prediction cannot go below, so
"prediction / health" is what validating and scoring one customer adds.

"In process" is the predictor's own work per request, `postprocess(predict(preprocess(
body)))` on a `ChurnPredictor` loaded in this process from the same model directory, with
no HTTP or JSON: the part this code controls. The gap between it and the round trip is the
model server's (FastAPI, uvicorn, JSON, the client).

How to read it: on a busy machine every absolute time is inflated, and by different amounts
from one minute to the next, so compare runs by "p50 vs baseline" (requests and health
checks alternate, so both see the same machine), and compare two versions of the code by
running both in one session, one after the other. The target (issue 10) is one instance
under 10 ms p50 on a quiet 2-CPU machine, where the health round trip is about 1 ms.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.contract import TELCO_CHURN  # noqa: E402
from components.data.sample_data import generate_customers  # noqa: E402
from components.data.validate import validate  # noqa: E402
from components.model.search import FAMILIES, CandidateResult  # noqa: E402
from components.model.train import fit_final  # noqa: E402
from components.registry import LocalRegistry, save_model  # noqa: E402
from components.serving.server import ChurnPredictor, start_model_server  # noqa: E402

# What the default training run picked on generated data, per family.
FAMILY_PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 0.1},
    "random_forest": {"max_depth": 12, "min_samples_leaf": 10},
    "gradient_boosting": {"learning_rate": 0.05, "max_leaf_nodes": 15, "l2_regularization": 1.0},
    "extra_trees": {"max_depth": 12, "min_samples_leaf": 10},
    "k_nearest_neighbors": {"n_neighbors": 50, "weights": "uniform"},
}
CONCURRENT_CLIENTS = 16


def register(family: str, root: Path) -> Path:
    """Fit `family` on 21,096 generated customers and register it; its model directory."""
    train = validate(generate_customers(21_096, seed=1), source="bench").clean
    best = CandidateResult(family, FAMILY_PARAMS[family], [], [], np.empty(0), 0.0)
    model = fit_final(train, best, seed=1)
    registry = LocalRegistry(root / "registry")
    entry = registry.register(
        save_model(model, root / family).parent,
        best_model=family,
        threshold=0.4,
        metrics={},
        data_fingerprint="bench",
        run_id="bench",
    )
    return registry.model_path(entry.version).parent


def round_trip(request: urllib.request.Request | str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - started


def predict_request(url: str, instance: dict[str, Any]) -> urllib.request.Request:
    body = json.dumps({"instances": [instance]}).encode()
    return urllib.request.Request(url, body, {"Content-Type": "application/json"})


def measure(family: str, requests: int, root: Path) -> dict[str, float]:
    customers = generate_customers(requests, seed=2).drop(columns=TELCO_CHURN.label_column)
    customers = customers.astype(object)
    instances = customers.where(customers.notna(), None).to_dict("records")
    server_model_dir = register(family, root)
    with start_model_server(server_model_dir, _free_port()) as server:
        health = server.url + "/health"
        for instance in instances[:20]:  # warm both routes
            round_trip(health)
            round_trip(predict_request(server.predict_url, instance))
        health_times, predict_times = [], []
        for instance in instances:  # alternated, so both see the same machine
            health_times.append(round_trip(health))
            predict_times.append(round_trip(predict_request(server.predict_url, instance)))
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
            list(
                pool.map(
                    lambda i: round_trip(predict_request(server.predict_url, i)),
                    instances,
                    timeout=600,
                )
            )
        concurrent_seconds = time.perf_counter() - started
        in_process_times = in_process(server_model_dir, instances)
    return {
        "predict_p50_ms": statistics.median(predict_times) * 1000,
        "predict_p95_ms": float(np.percentile(predict_times, 95)) * 1000,
        "health_p50_ms": statistics.median(health_times) * 1000,
        "concurrent_rps": len(instances) / concurrent_seconds,
        "in_process_p50_ms": statistics.median(in_process_times) * 1000,
    }


def in_process(model_dir: Path, instances: list[dict[str, Any]]) -> list[float]:
    """Seconds per one-instance request through the predictor's calls, without the server."""
    predictor = ChurnPredictor()
    predictor.load(str(model_dir))

    # Bodies as the server hands them to the predictor: parsed JSON.
    bodies = [json.loads(json.dumps({"instances": [instance]})) for instance in instances]
    for body in bodies[:20]:  # warm up
        predictor.postprocess(predictor.predict(predictor.preprocess(body)))
    times = []
    for body in bodies:
        started = time.perf_counter()
        predictor.postprocess(predictor.predict(predictor.preprocess(body)))
        times.append(time.perf_counter() - started)
    return times


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [family.name for family in FAMILIES]
    parser.add_argument("--family", choices=names, action="append", help="default: all")
    parser.add_argument("--requests", type=int, default=300, help="per family (default 300)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        for family in args.family or names:
            with console.status(f"{family}: fitting, serving, {args.requests} requests"):
                results[family] = measure(family, args.requests, Path(scratch))
    table = Table(
        "model",
        "one instance p50",
        "p95",
        "health p50 (baseline)",
        "p50 vs baseline",
        f"{CONCURRENT_CLIENTS} clients",
        "in process p50",
    )
    for family, r in results.items():
        table.add_row(
            family,
            f"{r['predict_p50_ms']:.1f} ms",
            f"{r['predict_p95_ms']:.1f} ms",
            f"{r['health_p50_ms']:.2f} ms",
            f"{r['predict_p50_ms'] / r['health_p50_ms']:.1f}x",
            f"{r['concurrent_rps']:.0f} requests/s",
            f"{r['in_process_p50_ms']:.1f} ms",
        )
    Console().print(table)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
