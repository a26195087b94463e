"""churn-pipelines components: plain functions that do the work, thin KFP wrappers over them.

One folder per concern, in layers: a module may import its own layer and those below it,
never one above (pyproject.toml's import-linter contracts check it, `lint-imports`).

    serving/      the model server and deploying to a Vertex AI endpoint
    scoring/      batch scoring: tiers, chunked scoring, staging, capacity tiers, Vertex
                  batch prediction, publishing, the scoring summary
    model/        features, calibration, training, the compiled tree kernel, evaluation,
                  registration (training's steps 4 to 6)
    monitoring/   drift: PSI against the reference profile registered with a model
    reports/      HTML reports and the training summary
    registry/     numbered model versions and their files, local or on Vertex AI
    data/         validation, split, ingest, sample data
    warehouse/    tables by URI: files, DuckDB, BigQuery

and beside them the modules every layer uses: `settings`, `errors`, `contract` (the data
contract), `local_files`, `stage` (the `@stage` decorator) and `experiment` (step 0 of
both pipelines). `features` and `calibration` here are aliases for models pickled before
the move (see their docstrings).
"""
