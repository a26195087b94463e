"""What the hostile-input and fault tests tried, for the reliability report.

A test takes the `reliability` fixture and records each case it tried with its outcome and
the rows it lost or duplicated. When `CHURN_RELIABILITY_LOG` names a file, each case is
appended to it as one JSON line, which `tests/reliability_report.py` tallies; otherwise the
cases are only checked, so a test can record unconditionally.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

LOG_VARIABLE = "CHURN_RELIABILITY_LOG"
Kind = Literal["input", "fault"]
Area = Literal[
    "training",
    "scoring",
    "serving",
    "registry",
    "publishing",
    "configuration",
    "identifiers",
    "signals",
]


@dataclass(frozen=True)
class Case:
    test: str
    kind: Kind
    area: Area
    description: str
    outcome: str  # "handled" (correct result) or "refused" (one clear line, non-zero exit)
    rows_lost: int = 0
    duplicates: int = 0


class ReliabilityLog:
    """Cases tried by one test."""

    def __init__(self, test: str) -> None:
        self.test = test

    def record(
        self,
        kind: Kind,
        area: Area,
        description: str,
        *,
        outcome: str,
        rows_lost: int = 0,
        duplicates: int = 0,
    ) -> Case:
        if outcome not in ("handled", "refused"):
            raise ValueError(f"outcome must be 'handled' or 'refused', not {outcome!r}")
        case = Case(self.test, kind, area, description, outcome, rows_lost, duplicates)
        target = os.environ.get(LOG_VARIABLE)
        if target:
            with Path(target).open("a", encoding="utf-8") as log:
                log.write(json.dumps(asdict(case)) + "\n")
        return case


def read_cases(path: Path) -> list[Case]:
    if not path.exists():
        return []
    return [Case(**json.loads(line)) for line in path.read_text().splitlines() if line]
