"""The monitoring pipeline's tables: the outcomes it reads and the `churn_performance`
table it writes beside the predictions (one row per scoring date, replaced per date)."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import pandas as pd

from components.contract import OUTCOME_COLUMNS
from components.errors import SourceError

PERFORMANCE_TABLE = "churn_performance"
_YES = {"1", "true", "yes", "y", "t"}
_NO = {"0", "false", "no", "n", "f"}


def performance_uri(predictions_uri: str) -> str:
    """The `churn_performance` table in the predictions' warehouse (a bq:// URI keeps its
    options)."""
    from components.warehouse import require_output

    location = require_output(predictions_uri)
    if location.kind == "bigquery":
        table_part, mark, options = predictions_uri.partition("?")
        dataset = table_part.rsplit(".", 1)[0]
        return f"{dataset}.{PERFORMANCE_TABLE}{mark}{options}"
    return f"duckdb://{location.path}?table={PERFORMANCE_TABLE}"


def read_outcomes(uri: str) -> pd.DataFrame | None:
    """The outcomes at `uri` as `customer_id` (text), `churned` (bool) and `observed_date`
    (date); `None` when the table does not exist yet (no outcome has arrived). Column names
    match case-insensitively; `churned` may be a boolean, 0/1 or yes/no."""
    from components.warehouse import read_table, table_exists

    if not table_exists(uri):
        return None
    frame = read_table(uri)
    by_key = {str(name).strip().lower(): name for name in frame.columns}
    missing = [c for c in OUTCOME_COLUMNS if c not in by_key]
    if missing:
        raise SourceError(
            f"column `{missing[0]}` missing from {uri}; expected {', '.join(OUTCOME_COLUMNS)}, "
            f"found: {', '.join(map(str, frame.columns))}"
        )
    churned = frame[by_key["churned"]]
    if churned.dtype != bool:
        text = churned.astype(str).str.strip().str.lower()
        bad = ~text.isin(_YES | _NO)
        if bad.any():
            raise SourceError(
                f"{uri}: `churned` must be true/false, 1/0 or yes/no, found "
                f"{churned[bad].iloc[0]!r}"
            )
        churned = text.isin(_YES)
    observed = pd.to_datetime(frame[by_key["observed_date"]], errors="coerce")
    if observed.isna().any():
        bad_value = frame[by_key["observed_date"]][observed.isna()].iloc[0]
        raise SourceError(
            f"{uri}: `observed_date` must be a date (YYYY-MM-DD), found {bad_value!r}"
        )
    return pd.DataFrame(
        {
            "customer_id": frame[by_key["customer_id"]].astype(str).to_numpy(),
            "churned": churned.to_numpy(dtype=bool),
            "observed_date": observed.dt.date.to_numpy(),
        }
    )


def write_performance(frame: pd.DataFrame, uri: str) -> dict[date, int]:
    """Replace each scoring date's row of the performance table at `uri` with the one in
    `frame` (one transaction per date: a re-run replaces, never duplicates); returns the
    rows now under each date."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.warehouse import StagedTable, replace_rows

    written = {}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with tempfile.TemporaryDirectory(prefix="churn-performance-") as scratch:
        for i, day in enumerate(frame["as_of_date"]):
            path = Path(scratch) / f"{day}.parquet"
            pq.write_table(table.slice(i, 1), path)
            staged = StagedTable(uri, path, tuple(frame.columns))
            written[day] = replace_rows([staged], key="as_of_date", value=day)[uri]
    return written


ALERTS_TABLE = "churn_alerts"
ALERT_COLUMNS = ("alert_date", "kind", "key", "subject", "sent_at")


def alerts_uri(predictions_uri: str) -> str:
    """The `churn_alerts` table (alerts sent, for deduplication) beside the predictions."""
    return performance_uri(predictions_uri).replace(PERFORMANCE_TABLE, ALERTS_TABLE)


def sent_on(uri: str, day: date) -> list[str]:
    """The keys of the alerts recorded as sent on `day` (`Alert.key`)."""
    from components.warehouse import read_table, table_exists

    if not table_exists(uri):
        return []
    frame = read_table(uri)
    if frame.empty:
        return []
    same_day = pd.to_datetime(frame["alert_date"]).dt.date == day
    return frame.loc[same_day, "key"].astype(str).tolist()


def record_sent(uri: str, day: date, sent: list) -> None:
    """Add alerts (`Alert`s) to those recorded as sent on `day`: the day's rows are
    replaced by the earlier ones plus these, in one transaction."""
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.warehouse import StagedTable, read_table, replace_rows, table_exists

    if not sent:
        return
    earlier: list[tuple[str, str, str]] = []
    if table_exists(uri):
        frame = read_table(uri)
        if not frame.empty:
            same_day = frame[pd.to_datetime(frame["alert_date"]).dt.date == day]
            earlier = list(same_day[["kind", "key", "subject"]].itertuples(index=False))
    rows = earlier + [(a.kind, a.key, a.subject) for a in sent]
    now = datetime.now(UTC)
    table = pa.table(
        {
            "alert_date": pa.array([day] * len(rows), pa.date32()),
            "kind": pa.array([str(r[0]) for r in rows], pa.string()),
            "key": pa.array([str(r[1]) for r in rows], pa.string()),
            "subject": pa.array([str(r[2]) for r in rows], pa.string()),
            "sent_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
        }
    )
    with tempfile.TemporaryDirectory(prefix="churn-alerts-") as scratch:
        path = Path(scratch) / "alerts.parquet"
        pq.write_table(table, path)
        replace_rows([StagedTable(uri, path, ALERT_COLUMNS)], key="alert_date", value=day)
