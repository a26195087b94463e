"""Run the churn pipelines: locally under kfp.local, or on Vertex AI Pipelines.

    python submit.py train [--source URI] [--json]     train, evaluate, register, promote
    python submit.py score [--as-of DATE] [--json]     score every customer, publish
    python submit.py runs                              list local runs
    python submit.py serve [--model VERSION]           serve a model on 127.0.0.1

With no Google Cloud project configured (`--project`, `CHURN_PROJECT` or
`GOOGLE_CLOUD_PROJECT`), pipelines run on this machine; `--local` forces that.
Settings come from churn.toml < CHURN_* environment < flags (see components/settings.py).
"""

import argparse
import json
import logging
import shlex
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from components.errors import ChurnError
from components.settings import Settings, load_settings
from components.warehouse import parse_uri

console = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        settings = load_settings(_overrides(args), config_file=args.config)
        if args.local:  # clears a project set in the config file or environment
            settings = replace(settings, project=None)
        return args.command(args, settings)
    except ChurnError as exc:
        if args.verbose:
            console.print_exception()
        console.print(f"[red]error:[/red] {exc}")
        return 1
    except OSError as exc:
        # A full disk, a read-only or unwritable home, a file where a folder should be:
        # the system's own words and the path, as one line.
        if args.verbose:
            console.print_exception()
        where = f": {exc.filename}" if exc.filename else ""
        console.print(f"[red]error:[/red] {exc.strerror or exc}{where}", markup=True)
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, help="local home directory (default ./.churn)")
    common.add_argument("--config", type=Path, help="TOML settings file (default churn.toml)")
    common.add_argument("--project", help="Google Cloud project: run on Vertex AI Pipelines")
    common.add_argument("--region", help="Google Cloud region (default us-central1)")
    common.add_argument("--local", action="store_true", help="run locally even with a project")
    common.add_argument("--json", action="store_true", help="print a JSON summary as last line")
    common.add_argument("-v", "--verbose", action="store_true", help="show logs and tracebacks")

    parser = argparse.ArgumentParser(
        prog="submit.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    train = commands.add_parser("train", parents=[common], help="run the training pipeline")
    train.add_argument("--source", help="customer table URI (.csv, .parquet, duckdb://, bq://)")
    train.add_argument("--seed", type=int, help="random seed (default 42)")
    train.add_argument("--cv-folds", type=int, dest="cv_folds", help="CV folds (default 5)")
    train.add_argument(
        "--candidates-per-family",
        type=int,
        dest="candidates_per_family",
        help="hyper-parameter settings tried per model family (default 2)",
    )
    train.set_defaults(command=_train)
    score = commands.add_parser("score", parents=[common], help="run the batch-scoring pipeline")
    score.add_argument("--source", help="customer table URI (default: the embedded warehouse)")
    score.add_argument(
        "--output",
        dest="predictions",
        help="predictions table: duckdb://PATH?table=NAME or bq://PROJECT.DATASET.TABLE "
        "(default: churn_predictions in the embedded warehouse, plus CSV files in "
        "<home>/predictions)",
    )
    score.add_argument("--model", default="champion", help="version or alias (default champion)")
    score.add_argument(
        "--as-of",
        type=_as_of_date,
        default="",
        metavar="DATE",
        help="YYYY-MM-DD (default: today in UTC, decided when the run starts scoring)",
    )
    for flag, dest, what in (
        ("--batch-rows", "score_batch_rows", "rows read, scored and written per chunk"),
        ("--workers", "score_workers", "scoring processes, 0 for one per CPU"),
        ("--high-risk-cutoff", "high_risk_cutoff", "churn probability of the high tier"),
        ("--medium-risk-cutoff", "medium_risk_cutoff", "churn probability of the medium tier"),
        ("--drift-threshold", "drift_threshold", "PSI above which a feature has drifted"),
    ):
        default = getattr(Settings(), dest)
        kind = int if isinstance(default, int) else float
        score.add_argument(
            flag, type=kind, dest=dest, metavar="N", help=f"{what} (default {default:,})"
        )
    score.set_defaults(command=_score)
    runs = commands.add_parser("runs", parents=[common], help="list local pipeline runs")
    runs.set_defaults(command=_runs)
    serve = commands.add_parser(
        "serve", parents=[common], help="serve a model on 127.0.0.1, as a Vertex endpoint would"
    )
    serve.add_argument("--model", default="champion", help="version or alias (default champion)")
    serve.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    serve.set_defaults(command=_serve)
    return parser


_SETTING_FLAGS = (
    "home",
    "project",
    "region",
    "source",
    "predictions",
    "seed",
    "cv_folds",
    "candidates_per_family",
    "score_batch_rows",
    "score_workers",
    "high_risk_cutoff",
    "medium_risk_cutoff",
    "drift_threshold",
)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in _SETTING_FLAGS}


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.training import training_pipeline

    _require_local(settings)
    parse_uri(settings.source_uri)  # a malformed URI fails here, not in step 1
    _check_registry(settings)
    if settings.source is None:
        _ensure_sample_data(settings)
    arguments = {
        "source_uri": settings.source_uri,
        "registry_uri": settings.registry_uri,
        "invalid_row_tolerance": settings.invalid_row_tolerance,
        "test_size": settings.test_size,
        "seed": settings.seed,
        "cv_folds": settings.cv_folds,
        "candidates_per_family": settings.candidates_per_family,
        "search_budget_seconds": settings.search_budget_seconds,
        "promotion_metric": settings.promotion_metric,
        "promotion_margin": settings.promotion_margin,
        "promotion_floor": settings.promotion_floor,
    }
    record = _run(training_pipeline, arguments, settings, args)
    if record.status != "succeeded":
        return 1
    summary = record.summary or {}
    metrics = summary["metrics"]
    console.print(
        f"[bold]model v{summary['model_version']}[/bold] ({summary['best_model']}): "
        f"ROC-AUC {metrics['roc_auc']:.3f}, PR-AUC {metrics['pr_auc']:.3f}, "
        f"F1 {metrics['f1']:.3f} (precision {metrics['precision']:.3f}, "
        f"recall {metrics['recall']:.3f}) on {summary['rows']['test']:,} held-out customers"
    )
    verdict = "[green]promoted to champion[/green]" if summary["promoted"] else "not promoted"
    console.print(f"{verdict}: {summary['promotion_reason']}")
    rows = summary["rows"]
    console.print(
        f"rows: {rows['read']:,} read, {rows['rejected']:,} rejected "
        f"({rows['duplicates']:,} duplicates), {rows['train']:,} train, {rows['test']:,} test"
    )
    summary["report"] = str(_keep_report(Path(summary["report"]), summary["run_id"], settings))
    console.print(f"report: {summary['report']}")
    if args.json:
        print(json.dumps(_train_json(summary)))
    return 0


def _keep_report(artifact: Path, run_id: str, settings: Settings) -> Path:
    """Copy the HTML report artifact (a file named `report`) to `<home>/reports/<run>.html`,
    where a browser opens it with a double click."""
    path = settings.home / "reports" / f"{run_id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(artifact.read_bytes())
    return path.resolve()


def _check_registry(settings: Settings) -> None:
    """A malformed registry URI fails here, with one line, not in a pipeline step."""
    from components.registry import open_registry

    open_registry(settings.registry_uri)


def _require_local(settings: Settings) -> None:
    if settings.runs_on_vertex:
        raise ChurnError(
            f"project {settings.project!r} is set: submitting to Vertex AI is not supported "
            "yet; pass --local to run on this machine"
        )


def _train_json(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "status", "model_version", "promoted", "promotion_reason", "best_model")
    return {k: summary[k] for k in keys} | {
        "metrics": summary["metrics"],
        "cv": summary["cv"],
        "rows": summary["rows"],
        "report": summary["report"],
    }


def _as_of_date(text: str) -> str:
    """Check a --as-of date early; the pipeline gets it as text ("" = today when it runs)."""
    from components.score import resolve_as_of

    if not text.strip():
        return ""
    try:
        return resolve_as_of(text).isoformat()
    except ChurnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _score(args: argparse.Namespace, settings: Settings) -> int:
    from components.warehouse import require_output
    from pipelines.scoring import scoring_pipeline

    _require_local(settings)
    parse_uri(settings.source_uri)
    _check_registry(settings)
    output_uri = settings.predictions_uri
    require_output(output_uri)
    if settings.source is None:
        _ensure_sample_data(settings)
    arguments = {
        "source_uri": settings.source_uri,
        "registry_uri": settings.registry_uri,
        "output_uri": output_uri,
        "model_ref": args.model,
        "as_of": args.as_of,
        "export_dir": str((settings.home / "predictions").resolve()),
        "batch_rows": settings.score_batch_rows,
        "workers": settings.score_workers,
        "high_risk_cutoff": settings.high_risk_cutoff,
        "medium_risk_cutoff": settings.medium_risk_cutoff,
        "invalid_row_tolerance": settings.invalid_row_tolerance,
        "drift_threshold": settings.drift_threshold,
    }
    record = _run(scoring_pipeline, arguments, settings, args)
    if record.status != "succeeded":
        return 1
    summary = record.summary or {}
    rows, tiers, drift = summary["rows"], summary["tiers"], summary["drift"]
    console.print(
        f"[bold]{rows['scored']:,} customers scored[/bold] for {summary['as_of_date']} with "
        f"model v{summary['model_version']}: predicted churn rate {summary['churn_rate']:.1%}; "
        f"risk tiers {', '.join(f'{t} {n:,}' for t, n in tiers.items())}"
    )
    console.print(
        f"rows: {rows['read']:,} read, {rows['scored']:,} scored, {rows['rejected']:,} rejected "
        f"({rows['duplicates']:,} duplicates) -> {summary['output']}, {summary['rejects_output']}"
    )
    if drift is None:
        console.print("drift: not measured (the model has no reference profile)")
    else:
        drifted = ", ".join(drift["drifted_features"]) or "no feature"
        console.print(
            f"drift: {drifted} over PSI {drift['threshold']}; score PSI {drift['score_psi']}"
        )
    for kind, path in summary["exports"].items():
        console.print(f"{kind} CSV: {path}")
    summary["report"] = str(_keep_report(Path(summary["report"]), summary["run_id"], settings))
    console.print(f"report: {summary['report']}")
    if args.json:
        keys = ("run_id", "status", "model_version", "as_of_date", "output", "rejects_output")
        extra = ("rows", "churn_rate", "tiers", "unseen_categories", "missing_values", "drift")
        extra += ("exports", "report")
        print(json.dumps({k: summary[k] for k in (*keys, *extra)}))
    return 0


def _run(pipeline_func, arguments: dict[str, Any], settings: Settings, args: argparse.Namespace):
    """Run locally with one line of progress per step; print the error line on failure."""
    from pipelines.runner import run_locally

    status = console.status("starting pipeline")

    def on_step(step: str, event: str, seconds: float, detail: str) -> None:
        if event == "started":
            status.update(f"running {step}")
        elif event == "progress":
            status.update(f"running {step} [dim]{seconds:.0f}s: {detail}[/dim]")
        elif event == "succeeded":
            console.print(f"  [green]✓[/green] {step} [dim]{seconds:.1f}s[/dim]")
        else:
            console.print(f"  [red]✗[/red] {step} [dim]{seconds:.1f}s[/dim]")

    console.print(f"[bold]{pipeline_func.name}[/bold] on this machine (kfp.local)")
    with status:
        record = run_locally(pipeline_func, arguments, home=settings.home, on_step=on_step)
    if record.status != "succeeded":
        where = f" in step {record.failed_step}" if record.failed_step else ""
        console.print(f"[red]error:[/red] run {record.run_id} failed{where}: {record.error}")
        console.print(f"[dim]log: {record.log}[/dim]")
        if args.verbose:
            console.print(Path(record.log).read_text())
        if args.json:
            print(json.dumps({"run_id": record.run_id, "status": "failed", "error": record.error}))
    else:
        console.print(f"run {record.run_id} succeeded in {record.seconds:.1f}s")
    return record


def _ensure_sample_data(settings: Settings) -> None:
    """On a first local run, fill the embedded warehouse with generated customers."""
    from components.sample_data import generate_customers
    from components.warehouse import table_exists, write_table

    if table_exists(settings.source_uri):
        return
    console.print(
        f"loading {settings.sample_rows:,} generated sample customers into {settings.source_uri}"
    )
    write_table(generate_customers(settings.sample_rows, seed=settings.seed), settings.source_uri)


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.runner import list_runs

    rows = [_run_row(record) for record in list_runs(settings.home)]
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table("run id", "status", "started", "seconds", "model", "headline")
    for row in rows:
        table.add_row(
            row["run_id"],
            row["status"],
            row["started_at"],
            f"{row['seconds']:.1f}",
            str(row["model_version"] or ""),
            row["headline"],
        )
    # Piped output keeps whole run ids rather than wrapping at 80 columns.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0


def _run_row(record) -> dict[str, Any]:
    """One run with its headline: test ROC-AUC for training, rows scored for scoring."""
    summary = record.summary or {}
    if "metrics" in summary:
        headline = f"ROC-AUC {summary['metrics']['roc_auc']:.3f}"
    elif "rows" in summary:
        headline = f"{summary['rows']['scored']:,} scored"
    else:
        headline = record.error or ""
    return {
        "run_id": record.run_id,
        "pipeline": record.pipeline,
        "status": record.status,
        "started_at": record.started_at,
        "seconds": record.seconds,
        "model_version": summary.get("model_version"),
        "roc_auc": summary.get("metrics", {}).get("roc_auc"),
        "headline": headline,
    }


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve a registered model with the model server its Vertex endpoint runs, on this
    machine only, until Ctrl-C: clients can be tried before anything is deployed."""
    from components.registry import open_registry

    registry = open_registry(settings.registry_uri)
    entry = registry.get(args.model)
    model_dir = registry.model_path(entry.version).parent
    # Imported once there is a model to serve: the model server's libraries take seconds.
    from components.serving import start_model_server

    # `kill` stops us like Ctrl-C does, so the model server is never left behind; and
    # Ctrl-C works even when started from a shell that ignores it (`cmd &` in a script).
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    with console.status(f"starting the model server for model v{entry.version}"):
        server = start_model_server(
            model_dir,
            args.port,
            settings=settings,
            log_path=settings.home / f"model-server-{args.port}.log",
        )
    with server:
        example = _example_request(settings)
        console.print(f"serving model v{entry.version} ({entry.best_model}): {server.predict_url}")
        console.print(
            "try: curl -s -H 'Content-Type: application/json' "
            f"-d @{shlex.quote(str(example))} {server.predict_url}",
            markup=False,
        )
        console.print(f"server log: {server.log_path}", markup=False)
        console.print("press Ctrl-C to stop")
        try:
            code = server.process.wait()
        except KeyboardInterrupt:
            console.print("model server stopped")
            return 0
    console.print(
        f"[red]error:[/red] the model server exited with code {code}; log: {server.log_path}"
    )
    return 1


def _example_request(settings: Settings) -> Path:
    """A request body of two generated customers, for the printed curl line to send."""
    from components.contract import TELCO_CHURN
    from components.sample_data import generate_customers

    customers = generate_customers(2, seed=settings.seed, messy=False)
    customers = customers.drop(columns=TELCO_CHURN.label_column).astype(object)
    instances = customers.where(customers.notna(), None).to_dict("records")
    path = settings.home / "serve-example.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"instances": instances}, indent=2))
    return path


if __name__ == "__main__":
    sys.exit(main())
