"""Publishing scores: the staged predictions and rejects of a scoring run replace the as-of
date's rows of the output table and of its `_rejects` table in one transaction (see
`components.warehouse.replace_rows`), then are exported as CSV files to a local directory
or `gs://` when asked."""

from datetime import date
from pathlib import Path
from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Output

from components.stage import stage


def publish_scores(
    directory: Path, *, output_uri: str, as_of: date, export_dir: str | Path | None = None
) -> dict[str, Any]:
    """Replace the as-of date's predictions and rejects in the warehouse with the staged
    ones in `directory`, in one transaction; then, if `export_dir` (a local directory or
    `gs://BUCKET/PATH`) is given, export both as CSV files there."""
    import pyarrow.parquet as pq

    from components.score import (
        PREDICTION_COLUMNS,
        PREDICTIONS_FILE,
        REJECT_COLUMNS,
        REJECTS_FILE,
        REPEATS_FILE,
    )
    from components.warehouse import (
        StagedTable,
        export_csv,
        related_table,
        replace_rows,
        require_output,
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
    counts = replace_rows([predictions, rejects], key="as_of_date", value=as_of)
    exports = {}
    if export_dir is not None:
        name = require_output(output_uri).table
        for kind, staged, suffix in (
            ("predictions", predictions, ""),
            ("rejects", rejects, "_rejects"),
        ):
            target = f"{str(export_dir).rstrip('/')}/{name}{suffix}_{as_of.isoformat()}.csv"
            export_csv(staged, target)
            exports[kind] = target
    return {
        "output": output_uri,
        "rejects_output": rejects_uri,
        "as_of_date": as_of.isoformat(),
        "rows": {"scored": counts[output_uri], "rejected": counts[rejects_uri]},
        "exports": exports,
    }


@stage
def publish_predictions(
    staged: Input[Dataset], output_uri: str, export_dir: str, published: Output[Artifact]
) -> None:
    """Replace the as-of date's predictions and rejects in the output warehouse with the
    staged ones in one transaction, then export them as CSV (to a directory or gs://)
    when `export_dir` is set."""
    import json
    from datetime import date
    from pathlib import Path

    from components.publish import publish_scores

    result = publish_scores(
        Path(staged.path),
        output_uri=output_uri,
        as_of=date.fromisoformat(staged.metadata["as_of_date"]),
        export_dir=export_dir or None,
    )
    Path(published.path).write_text(json.dumps(result, indent=2))
    published.metadata.update(result["rows"] | {"output": output_uri})
