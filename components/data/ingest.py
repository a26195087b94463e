"""Step 1 of both pipelines: read the customer table from its URI into a Dataset."""

from kfp.dsl import Dataset, Output

from components.stage import stage


@stage
def ingest(source_uri: str, raw: Output[Dataset]) -> None:
    """Copy the source table, as read, into a Parquet Dataset for the next steps."""
    import logging

    from components.warehouse import read_table

    logging.basicConfig(level=logging.INFO)
    frame = read_table(source_uri)
    frame.to_parquet(raw.path, index=False)
    raw.metadata.update({"source": source_uri, "rows": len(frame), "columns": len(frame.columns)})
    logging.getLogger("ingest").info("read %d rows from %s", len(frame), source_uri)
