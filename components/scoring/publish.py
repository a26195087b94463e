"""Publishing scores: the staged predictions and rejects of a scoring run replace the as-of
date's rows of the output table and of its `_rejects` table in one transaction (see
`components.warehouse.replace_rows`), and, when asked, their CSV exports in a local
directory or `gs://`, so that the table and its CSV files change together or not at all:

1. Both CSV files are written whole to local files (beside their targets, or in a scratch
   directory for `gs://`): a failure here, a full disk say, leaves everything as it was.
2. A journal naming the staged rows is written in the export directory.
3. The table rows are replaced in one transaction.
4. The CSV files are moved into place (renamed, or uploaded), and the journal removed.

A run stopped between 2 and 4 (killed, or its upload failing) leaves its journal: the next
publish to that directory, of any date, first publishes the journal's staged rows again,
which makes the table and the CSV files agree. Publishes to one local directory take
turns (a lock file), so two runs at once can't interleave these steps.

A table's CSV files are named `<table>_<hash of its warehouse>_<date>.csv` (`export_stem`),
so two tables never share a file, and their text cannot start a spreadsheet formula (see
`components.warehouse.staged.write_csv`); the warehouse table keeps the text as it is."""

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Output

from components.errors import SourceError, one_line
from components.local_files import LockTimeout, exclusive_lock
from components.stage import stage

JOURNAL_SUFFIX = ".publish.json"
LOCK_FILE = ".publish.lock"
# How long a publish waits for another run publishing to the same directory.
LOCK_WAIT_SECONDS = 600.0

log = logging.getLogger(__name__)


class ExportsPendingError(SourceError):
    """The table rows were replaced but the CSV files could not be put in place (the next
    publish to the folder completes them); `published` is what the table now holds."""

    def __init__(self, message: str, *, published: dict[str, Any]) -> None:
        super().__init__(message)
        self.published = published


def publish_scores(
    directory: Path, *, output_uri: str, as_of: date, export_dir: str | Path | None = None
) -> dict[str, Any]:
    """Replace the as-of date's predictions and rejects in the warehouse with the staged
    ones in `directory`, in one transaction, and, if `export_dir` (a local directory or
    `gs://BUCKET/PATH`) is given, their CSV files there with them; first completing any
    publish to `export_dir` that an interrupted run left half done."""
    if export_dir is None:
        return _publish(directory, output_uri, as_of, None) | {"completed": []}
    folder = str(export_dir).rstrip("/")
    with _turn(folder):
        completed = _complete_interrupted(folder)
        return _publish(directory, output_uri, as_of, folder) | {"completed": completed}


def _publish(
    directory: Path, output_uri: str, as_of: date, export_dir: str | None
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from components.scoring.staged import (
        PREDICTION_COLUMNS,
        PREDICTIONS_FILE,
        REJECT_COLUMNS,
        REJECTS_FILE,
        REPEATS_FILE,
    )
    from components.warehouse import (
        StagedTable,
        put_file,
        put_text,
        related_table,
        remove,
        replace_rows,
        write_csv,
    )

    rejects_uri = related_table(output_uri, "_rejects")
    repeats = directory / REPEATS_FILE
    predictions = StagedTable(
        output_uri,
        directory / PREDICTIONS_FILE,
        PREDICTION_COLUMNS,
        leave_out=repeats
        if repeats.exists() and pq.ParquetFile(repeats).metadata.num_rows
        else None,
    )
    rejects = StagedTable(rejects_uri, directory / REJECTS_FILE, REJECT_COLUMNS)
    result = {
        "output": output_uri,
        "rejects_output": rejects_uri,
        "as_of_date": as_of.isoformat(),
        "exports": {},
    }
    if export_dir is None:
        counts = replace_rows([predictions, rejects], key="as_of_date", value=as_of)
        return result | {"rows": _rows(counts, output_uri, rejects_uri)}

    day = as_of.isoformat()
    exports = {
        "predictions": (predictions, f"{export_dir}/{export_stem(output_uri)}_{day}.csv"),
        "rejects": (rejects, f"{export_dir}/{export_stem(rejects_uri)}_{day}.csv"),
    }
    journal = f"{export_dir}/.{export_stem(output_uri)}_{day}{JOURNAL_SUFFIX}"
    with tempfile.TemporaryDirectory(prefix="churn-export-") as scratch:
        local = {
            kind: Path(scratch) / Path(target).name
            if target.startswith("gs://")
            else Path(target + ".partial")
            for kind, (_, target) in exports.items()
        }
        try:
            try:
                for kind, (table, _) in exports.items():
                    written, staged = write_csv(table, local[kind]), table.rows()
                    if written != staged:
                        raise SourceError(f"{written} rows in {local[kind]}, {staged} staged")
                entry = {"staged": str(directory), "output": output_uri, "as_of_date": day}
                put_text(journal, json.dumps(entry))
            except (OSError, SourceError) as exc:
                raise SourceError(
                    f"publishing {output_uri} for {as_of} failed and changed nothing (the "
                    f"table and the CSV files in {export_dir} are as they were): {_reason(exc)}"
                ) from None
            try:
                counts = replace_rows([predictions, rejects], key="as_of_date", value=as_of)
            except (OSError, SourceError) as exc:
                remove(journal)  # rolled back: there is nothing to complete
                raise SourceError(_reason(exc)) from None
            try:
                for kind, (_, target) in exports.items():
                    put_file(local[kind], target)
                remove(journal)
            except (OSError, SourceError) as exc:
                raise ExportsPendingError(
                    f"{output_uri} holds the new rows for {as_of} but putting their CSV files "
                    f"in {export_dir} failed: {_reason(exc)}; the next publish to "
                    f"{export_dir} completes them (journal {journal})",
                    published=result | {"rows": _rows(counts, output_uri, rejects_uri)},
                ) from None
        finally:
            for path in local.values():
                path.unlink(missing_ok=True)
    return result | {
        "rows": _rows(counts, output_uri, rejects_uri),
        "exports": {kind: target for kind, (_, target) in exports.items()},
    }


def export_stem(table_uri: str) -> str:
    """The start of a table's CSV file names: its name and a short hash of where it lives
    (the DuckDB file's absolute path, or the BigQuery project and dataset), so that the
    exports of two tables of one name in different warehouses never share a file."""
    import hashlib

    from components.warehouse import require_output

    location = require_output(table_uri)
    if location.kind == "duckdb":
        home = f"duckdb:{Path(location.path).resolve()}"  # type: ignore[arg-type]
    else:
        home = f"bq:{location.bigquery_table.rpartition('.')[0]}"
    return f"{location.table}_{hashlib.sha256(home.encode()).hexdigest()[:8]}"


def _rows(counts: dict[str, int], output_uri: str, rejects_uri: str) -> dict[str, int]:
    return {"scored": counts[output_uri], "rejected": counts[rejects_uri]}


def _complete_interrupted(export_dir: str) -> list[str]:
    """Publish again the staged rows of each journal a stopped run left in `export_dir`
    (its table may hold them while its CSV files hold the old ones; replacing a date's rows
    twice is harmless). Returns the journals completed."""
    from components.warehouse import list_files, read_text

    completed = []
    for journal in list_files(export_dir, JOURNAL_SUFFIX):
        try:
            entry = json.loads(read_text(journal))
            staged, output, day = Path(entry["staged"]), entry["output"], entry["as_of_date"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"publish journal {journal} cannot be read: {exc}") from None
        if not staged.is_dir():
            raise SourceError(
                f"{journal}: an interrupted publish of {output} for {day} cannot be completed, "
                f"its staged rows {staged} are gone; delete {journal} and score {day} again"
            )
        log.warning("completing the interrupted publish of %s for %s (%s)", output, day, journal)
        _publish(staged, output, date.fromisoformat(day), export_dir)
        completed.append(journal)
    return completed


@contextlib.contextmanager
def _turn(export_dir: str) -> Iterator[None]:
    """Hold the lock of a local export directory while publishing to it (Cloud Storage has
    no locks: scheduled Vertex runs of one pipeline don't overlap)."""
    if export_dir.startswith("gs://"):
        yield
        return
    folder = Path(export_dir)
    with contextlib.ExitStack() as held:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive_lock(folder / LOCK_FILE, timeout=LOCK_WAIT_SECONDS))
        except LockTimeout:
            raise SourceError(
                f"another run has been publishing to {export_dir} for over "
                f"{LOCK_WAIT_SECONDS:.0f} s (lock {folder / LOCK_FILE}); try again later"
            ) from None
        except OSError as exc:
            raise SourceError(f"cannot publish to {export_dir}: {_reason(exc)}") from None
        yield


def _reason(exc: BaseException) -> str:
    """An error's own words as one line, with the file it names."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return one_line(exc)


@stage
def publish_predictions(
    staged: Input[Dataset], output_uri: str, export_dir: str, published: Output[Artifact]
) -> None:
    """Replace the as-of date's predictions and rejects in the output warehouse with the
    staged ones in one transaction, and their CSV files (in a directory or gs://) with them
    when `export_dir` is set."""
    import json
    from datetime import date
    from pathlib import Path

    from components.errors import SourceError
    from components.scoring.publish import ExportsPendingError, publish_scores

    try:
        result = publish_scores(
            Path(staged.path),
            output_uri=output_uri,
            as_of=date.fromisoformat(staged.metadata["as_of_date"]),
            export_dir=export_dir or None,
        )
    except ExportsPendingError as exc:
        # The table changed: the run's record must say so though this step fails. Raised
        # as the plain SourceError it is, whose line the local runner picks out.
        Path(published.path).write_text(json.dumps(exc.published, indent=2))
        raise SourceError(str(exc)) from None
    Path(published.path).write_text(json.dumps(result, indent=2))
    published.metadata.update(result["rows"] | {"output": output_uri})
