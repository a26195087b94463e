"""The scoring report's reason section: why today's `high` tier is at risk, against a week
ago.

Each `high`-tier customer counts once, under their strongest reason (`reason_1`). Today's
counts come from the run's staged predictions (after the capacity tiers, repeats left
out: the rows publishing writes); last week's from the published predictions of the
as-of date seven days earlier, queried in the warehouse (DuckDB or BigQuery), so the
comparison needs no state of its own.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.scoring.staged import PREDICTIONS_FILE, REPEATS_FILE
from components.warehouse import STAGED_ROW

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)


def staged_high_tier_reasons(directory: Path) -> dict[str, int]:
    """Today's `high`-tier customers per strongest reason, from the staged run in
    `directory` (customers without a reason counted under "")."""
    columns = [STAGED_ROW, "risk_tier", "reason_1"]
    table = pq.read_table(directory / PREDICTIONS_FILE, columns=columns)
    repeats = directory / REPEATS_FILE
    if repeats.exists():
        left_out = pq.read_table(repeats, columns=[STAGED_ROW]).column(0)
        table = table.filter(pc.invert(pc.is_in(table[STAGED_ROW], left_out)))
    high = table.filter(pc.equal(table["risk_tier"], "high"))
    return _counts(high["reason_1"])


def has_reasons(today: dict[str, int]) -> bool:
    """Whether today's high tier carries reason codes (a run with `reasons_for = none`
    counts its whole tier under "")."""
    return bool(today) and set(today) != {""}


def published_high_tier_reasons(output_uri: str, day: date) -> dict[str, int] | None:
    """The `high`-tier customers per strongest reason published for `day` in the warehouse
    table `output_uri`; None when there is nothing to compare with (no table, no such
    day, a table from before reason codes, or a warehouse of another kind)."""
    from components.warehouse import parse_uri, table_exists

    location = parse_uri(output_uri)
    if location.kind not in ("duckdb", "bigquery"):
        return None
    try:
        if not table_exists(output_uri):
            return None
        counts = (_duckdb if location.kind == "duckdb" else _bigquery)(location, day)
    except Exception as error:  # the report goes on without the comparison
        log.warning("no reason counts for %s on %s: %s", output_uri, day, error)
        return None
    return counts or None


_QUERY = (
    "SELECT reason_1, COUNT(*) AS customers FROM {table} WHERE as_of_date = {day} "
    "AND risk_tier = 'high' GROUP BY reason_1"
)


def _duckdb(location, day: date) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(location.path), read_only=True) as con:
        rows = con.execute(_QUERY.format(table=f'"{location.table}"', day="?"), [day]).fetchall()
    return {reason or "": int(n) for reason, n in rows}


def _bigquery(location, day: date) -> dict[str, int]:
    from google.cloud import bigquery as bq

    from components.warehouse.bigquery import client

    config = bq.QueryJobConfig(query_parameters=[bq.ScalarQueryParameter("day", "DATE", day)])
    sql = _QUERY.format(table=f"`{location.bigquery_table}`", day="@day")
    rows = client(location).query(sql, job_config=config).result(timeout=120)
    return {row["reason_1"] or "": int(row["customers"]) for row in rows}


def _counts(reasons: pa.ChunkedArray) -> dict[str, int]:
    counted = pc.value_counts(reasons.fill_null(""))
    return {str(v["values"]): int(v["counts"]) for v in counted.to_pylist()}


def reason_rows(today: dict[str, int], last_week: dict[str, int] | None) -> list[dict[str, object]]:
    """The report's table: each reason's share of today's `high` tier, and of last week's
    with the change in percentage points when last week is known; most common first."""
    total = sum(today.values())
    before = sum(last_week.values()) if last_week else 0
    rows = []
    for reason in sorted(set(today) | set(last_week or {}), key=lambda r: -today.get(r, 0)):
        share = today.get(reason, 0) / total if total else 0.0
        row: dict[str, object] = {
            "strongest reason": reason or "(none pushes towards churn)",
            "customers today": today.get(reason, 0),
            "share today": f"{share:.1%}",
        }
        if last_week:
            earlier = last_week.get(reason, 0) / before
            row["share a week ago"] = f"{earlier:.1%}"
            row["change (points)"] = round(100 * (share - earlier), 1)
        rows.append(row)
    return rows


def reason_section(
    today: dict[str, int], last_week: dict[str, int] | None, as_of: date
) -> tuple[str, str] | None:
    """The report section (heading, HTML), or None for a run without reason codes."""
    from components.reports.page import data_table

    if not has_reasons(today):
        return None
    compared = (
        f"against the predictions published for {as_of - WEEK}"
        if last_week
        else f"nothing with reason codes was published for {as_of - WEEK} to compare with"
    )
    note = (
        '<p class="note">Customers in the <code>high</code> tier by their strongest reason '
        f"(<code>reason_1</code>); {compared}.</p>"
    )
    return ("Why the high tier is at risk", note + data_table(reason_rows(today, last_week)))
