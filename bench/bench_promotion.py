"""Benchmark: the promotion rules' error rates, measured by simulation.

    python bench/bench_promotion.py [--replicates 200] [--sizes 1000 4200 20000]

A champion and a new model score the same simulated test customers; the new model's true
ROC-AUC differs from the champion's by a known amount (from -0.02 to +0.01, measured on
200,000 customers). Each replicate draws fresh test customers and applies each rule with
the evaluation step's own paired bootstrap (`components.model.evaluate.bootstrap_interval`)
and the register step's own decision (`components.model.register.decide_promotion`). The
table is the share of replicates that promote, per true difference and test-set size:
where the new model is worse than the tolerance that share is the rule's false-promotion
rate; where it is as good or better, one minus it is the rate of keeping a stale champion.

The two models share most of their errors, as two models fitted on the same features do
(their paired difference is then far less noisy than either metric), with a churn rate of
27% and a best-reachable ROC-AUC near 0.85, as on the Telco data.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from components.model.evaluate import bootstrap_interval, metric_value
from components.model.register import decide_promotion

DIFFERENCES = (-0.02, -0.01, -0.005, -0.0025, 0.0, 0.0025, 0.005, 0.01)
# Signal, shared model error and each model's own error, in units of the latent churn score.
_SHARED_ERROR, _CHAMPION_ERROR = 0.45, 0.35
_INTERCEPT, _SLOPE = -1.35, 1.5


def _draw(rng: np.random.Generator, n: int, own_error: float) -> tuple[np.ndarray, ...]:
    """(label, champion score, new model's score) of `n` simulated customers."""
    signal = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(_INTERCEPT + _SLOPE * signal)))).astype(int)
    shared = signal + _SHARED_ERROR * rng.normal(size=n)
    champion = shared + _CHAMPION_ERROR * rng.normal(size=n)
    candidate = shared + own_error * rng.normal(size=n)
    # As probabilities, rounded as published scores are (ties).
    return label, *(np.round(1 / (1 + np.exp(-s)), 3) for s in (champion, candidate))


def _true_difference(own_error: float, rng: np.random.Generator) -> float:
    label, champion, candidate = _draw(rng, 200_000, own_error)
    return float(roc_auc_score(label, candidate) - roc_auc_score(label, champion))


def _own_error_for(difference: float) -> float:
    """The new model's own error whose true ROC-AUC difference is `difference` (bisection;
    the difference falls as the error grows)."""
    low, high = 0.0, 2.0
    for _ in range(18):
        middle = (low + high) / 2
        if _true_difference(middle, np.random.default_rng(0)) > difference:
            low = middle
        else:
            high = middle
    return (low + high) / 2


RULES = {
    "margin 0.002 (before)": {"rule": "margin"},
    "superiority": {"rule": "superiority"},
    "non-inferiority 0.005": {"rule": "non_inferiority", "tolerance": 0.005},
    "non-inferiority 0.0025": {"rule": "non_inferiority", "tolerance": 0.0025},
    "non-inferiority 0.01": {"rule": "non_inferiority", "tolerance": 0.01},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--samples", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 4_200, 20_000])
    args = parser.parse_args()
    console = Console()
    started = time.perf_counter()
    errors = {d: _own_error_for(d) for d in DIFFERENCES}
    promoted = {(rule, n, d): 0 for rule in RULES for n in args.sizes for d in DIFFERENCES}
    for n in args.sizes:
        for d, own_error in errors.items():
            rng = np.random.default_rng([n, int(d * 1e5) + 10**6])
            for replicate in range(args.replicates):
                label, champion, candidate = _draw(rng, n, own_error)
                new = metric_value("roc_auc", label, candidate, 0.5)
                old = metric_value("roc_auc", label, champion, 0.5)
                interval = bootstrap_interval(
                    "roc_auc", label, candidate, 0.5, samples=args.samples,
                    seed=replicate, baseline=(champion, 0.5),
                )  # fmt: skip
                for name, rule in RULES.items():
                    decision = decide_promotion(
                        metric="roc_auc", candidate=new, champion=old, margin=0.002,
                        floor=0.0, difference_interval=interval, rows=n, **rule,
                    )  # fmt: skip
                    promoted[name, n, d] += decision.promote
            # Each cell as it is done: the largest sizes take long on a busy machine.
            cell = {name: promoted[name, n, d] / args.replicates for name in RULES}
            console.print(json.dumps({"customers": n, "true_difference": d} | cell))
    load = os.getloadavg()

    table = Table(
        title=f"share promoted, {args.replicates} replicates each "
        f"(bootstrap {args.samples}; load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})"
    )
    table.add_column("rule")
    table.add_column("test customers", justify="right")
    for d in DIFFERENCES:
        table.add_column(f"true Δ {d:+.4f}", justify="right")
    for name in RULES:
        for n in args.sizes:
            table.add_row(
                name,
                f"{n:,}",
                *(f"{promoted[name, n, d] / args.replicates:.0%}" for d in DIFFERENCES),
            )
    console.print(table)
    console.print(f"{time.perf_counter() - started:.0f} s")
    print(
        json.dumps(
            {
                f"{name} | {n} | {d:+.4f}": promoted[name, n, d] / args.replicates
                for name, n, d in promoted
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
