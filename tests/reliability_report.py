"""Re-run the hostile-input and fault tests and report what they tried.

    python tests/reliability_report.py [--thorough] [--output FILE]

Runs every test that records its cases (`pytest -m reliability`: the hostile-input and
fault tests, marked so by tests/conftest.py) with each case recorded to a temporary log
(see tests/reliability.py), then prints a markdown report (and writes it to FILE): cases tried
by kind and area, the faults injected, outcomes, rows lost and duplicates. `--thorough`
runs the randomized parts with many more examples (HYPOTHESIS_PROFILE=thorough). Exits
non-zero when a test failed, nothing was recorded, or any case lost or duplicated a row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from reliability import LOG_VARIABLE, Case, read_cases

TESTS = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thorough", action="store_true", help="many more random examples")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="churn-reliability-") as scratch:
        log = Path(scratch) / "cases.jsonl"
        env = os.environ | {LOG_VARIABLE: str(log)}
        if args.thorough:
            env["HYPOTHESIS_PROFILE"] = "thorough"
        started = time.perf_counter()
        command = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-rfEx"]
        tests = subprocess.run(command, cwd=TESTS.parent, env=env)
        cases = read_cases(log)
    profile = "thorough" if args.thorough else "ci"
    report = render(cases, tests.returncode, profile, time.perf_counter() - started)
    print(report)
    if args.output:
        args.output.write_text(report + "\n", encoding="utf-8")
    lost = sum(case.rows_lost for case in cases)
    duplicates = sum(case.duplicates for case in cases)
    return 0 if tests.returncode == 0 and cases and lost == 0 == duplicates else 1


def render(cases: list[Case], pytest_exit: int, profile: str, seconds: float) -> str:
    """The markdown report of the recorded cases."""
    lost = sum(case.rows_lost for case in cases)
    duplicates = sum(case.duplicates for case in cases)
    verdict = "PASS" if pytest_exit == 0 and cases and lost == 0 == duplicates else "FAIL"
    lines = [
        "# Reliability report",
        "",
        f"- verdict: **{verdict}** (pytest exit {pytest_exit}, profile `{profile}`, "
        f"{seconds:.0f} s)",
        f"- cases tried: {len(cases)}; faults injected: "
        f"{sum(case.kind == 'fault' for case in cases)}",
        f"- rows lost: {lost}; duplicates: {duplicates}",
        "",
        "## Cases by kind and area",
        "",
        "| kind | area | cases | handled | refused | rows lost | duplicates |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    groups = sorted({(case.kind, case.area) for case in cases})
    for kind, area in groups:
        group = [c for c in cases if (c.kind, c.area) == (kind, area)]
        outcomes = Counter(c.outcome for c in group)
        lines.append(
            f"| {kind} | {area} | {len(group)} | {outcomes['handled']} | {outcomes['refused']} "
            f"| {sum(c.rows_lost for c in group)} | {sum(c.duplicates for c in group)} |"
        )
    lines += [
        "",
        "## Faults injected",
        "",
        "| area | fault | outcome | rows lost | duplicates |",
        "|---|---|---|---:|---:|",
    ]
    faults = Counter(
        (c.area, c.description, c.outcome, c.rows_lost, c.duplicates)
        for c in cases
        if c.kind == "fault"
    )
    for (area, description, outcome, rows_lost, dups), times in sorted(faults.items()):
        repeat = f" (x{times})" if times > 1 else ""
        lines.append(f"| {area} | {description}{repeat} | {outcome} | {rows_lost} | {dups} |")
    damaged = [c for c in cases if c.rows_lost or c.duplicates]
    if damaged:
        lines += ["", "## Cases that lost or duplicated rows", ""]
        lines += [
            f"- {c.test}: {c.description} (lost {c.rows_lost}, duplicated {c.duplicates})"
            for c in damaged
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
