"""Run the churn pipelines: locally under kfp.local, or on Vertex AI Pipelines.

    python submit.py train [--source URI] [--json]     train, evaluate, register, promote
    python submit.py score [--as-of DATE] [--json]     score every customer, publish
    python submit.py monitor [--as-of DATE] [--json]   performance, offers, alerts, trends
    python submit.py alerts --test                     send a test alert to every channel
    python submit.py runs                              list recent runs
    python submit.py serve [--model VERSION]           serve a model on 127.0.0.1
    python submit.py build [--builder docker|podman]   build and push both images (Cloud Build)
    python submit.py publish                           upload both templates (needs a project)
    python submit.py schedule [--scheduler vertex]     create or update the two schedules
        [--list | --pause | --resume | --delete]
    python submit.py setup [--sample-data]             make a Google Cloud project ready
        [--submitter-group EMAIL] [--viewer-group EMAIL] [--github-repository ORG/REPO]
    python submit.py check [--json]                    is the project ready? (read-only)

With no Google Cloud project configured (`--project`, `CHURN_PROJECT` or
`GOOGLE_CLOUD_PROJECT`), pipelines run on this machine; `--local` forces that. With one,
train and score submit to Vertex AI Pipelines (`--wait` follows the run), and
`--dry-run` prints the requests, one JSON object a line, without credentials or network
(without a project: the local run it would start); it never changes anything.
Settings come from churn.toml or --config < CHURN_* environment < flags, checked before
anything runs (see components/settings.py).
"""

import argparse
import contextlib
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from google.auth.exceptions import DefaultCredentialsError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from components.errors import ChurnError, SettingsError, one_line
from components.settings import Settings, load_settings
from components.warehouse import check_source, parse_uri

console = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        with _stop_signals():
            settings = load_settings(_overrides(args), config_file=args.config, flag_names=_FLAGS)
            if args.local:  # clears a project set in the config file or environment
                settings = settings.replace(project=None)
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
    except DefaultCredentialsError as exc:
        if args.verbose:
            console.print_exception()
        console.print(
            f"[red]error:[/red] no usable Google Cloud credentials ({one_line(exc)}): sign in "
            "with `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service-account key file",
            markup=True,
        )
        return 1
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        detail = getattr(exc, "detail", "") or f"stopped by {signal.Signals(signum).name}"
        console.print(f"[red]interrupted:[/red] {escape(detail)}", markup=True)
        return 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP stop every command as Ctrl-C does: a KeyboardInterrupt
    (`process_tree.interrupt`) is raised where the command is, so a run stops its steps and
    records itself (pipelines/runner.py) and `serve` stops its model server on the way out.
    SIGINT too when a script started us in the background, which ignores it. Later signals
    are ignored while stopping, which is bounded. Handlers are put back on exit (tests call
    `main` in-process); only the main thread can set them."""
    from pipelines.process_tree import interrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def stop(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            raise interrupt(signum)

    previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # Text, not a Path: Path("") is ".", and an empty --home must be refused, not run in ".".
    common.add_argument("--home", help="local home directory (default ./.churn)")
    common.add_argument("--config", type=Path, help="TOML settings file (default churn.toml)")
    common.add_argument("--project", help="Google Cloud project: run on Vertex AI Pipelines")
    common.add_argument("--region", help="Google Cloud region (default us-central1)")
    common.add_argument("--local", action="store_true", help="run locally even with a project")
    common.add_argument("--json", action="store_true", help="print a JSON summary as last line")
    common.add_argument("-v", "--verbose", action="store_true", help="show logs and tracebacks")
    cloud = argparse.ArgumentParser(add_help=False)
    cloud.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing: print the requests (JSON lines) instead of sending them, or\n"
        "without a project what a local run would do; needs no credentials",
    )
    submitted = argparse.ArgumentParser(add_help=False, parents=[cloud])
    submitted.add_argument(
        "--wait", action="store_true", help="on Vertex: follow the run to its end"
    )
    submitted.add_argument("--experiment", help="Vertex AI experiment the run joins")

    parser = argparse.ArgumentParser(
        prog="submit.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train", parents=[common, submitted], help="run the training pipeline"
    )
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
    score = commands.add_parser(
        "score", parents=[common, submitted], help="run the batch-scoring pipeline"
    )
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
        help="YYYY-MM-DD (default: today in time_zone, decided when the run starts scoring)",
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
    monitor = commands.add_parser(
        "monitor", parents=[common, submitted], help="run the monitoring pipeline"
    )
    monitor.add_argument("--output", dest="predictions", help="predictions table URI")
    monitor.add_argument("--outcomes", help="outcomes table URI (customer_id, churned, ...)")
    monitor.add_argument("--model", default="champion", help="version or alias (default champion)")
    monitor.add_argument(
        "--as-of", type=_as_of_date, default="", metavar="DATE",
        help="YYYY-MM-DD to look from (default: today in time_zone)",
    )  # fmt: skip
    monitor.set_defaults(command=_monitor)
    alerts = commands.add_parser(
        "alerts", parents=[common], help="send a test alert through every configured channel"
    )
    alerts.add_argument("--test", action="store_true", required=True, help="send a test alert")
    alerts.set_defaults(command=_alerts)
    runs = commands.add_parser(
        "runs", parents=[common], help="list recent runs (on Vertex AI with a project)"
    )
    runs.set_defaults(command=_runs)
    build = commands.add_parser(
        "build",
        parents=[common, cloud],
        help="build and push both container images (Cloud Build, or a local docker or podman)",
    )
    build.add_argument(
        "--builder",
        choices=("cloud-build", "docker", "podman"),
        default="cloud-build",
        help="Cloud Build (default: no Docker needed here), or docker or podman on this machine",
    )
    build.set_defaults(command=_build)
    publish = commands.add_parser(
        "publish",
        parents=[common, cloud],
        help="upload both templates to Artifact Registry (version, git commit, latest)",
    )
    publish.set_defaults(command=_publish)
    schedule = commands.add_parser(
        "schedule",
        parents=[common, cloud],
        help="create or update the weekly retraining and daily scoring schedules",
    )
    schedule.add_argument(
        "--scheduler",
        choices=("cloud-scheduler", "vertex"),
        default="cloud-scheduler",
        help="Cloud Scheduler jobs (default) or Vertex AI Schedules",
    )
    action = schedule.add_mutually_exclusive_group()
    for flag in ("--list", "--pause", "--resume", "--delete"):
        action.add_argument(
            flag, dest="action", action="store_const", const=flag[2:], help=f"{flag[2:]} them"
        )
    schedule.set_defaults(command=_schedule, action="apply")
    setup = commands.add_parser(
        "setup",
        parents=[common, cloud],
        help="make a Google Cloud project ready: APIs, accounts, grants, bucket, dataset, "
        "repositories (idempotent)",
    )
    setup.add_argument("--source", help="customer table (default bq://PROJECT.churn.customers)")
    setup.add_argument(
        "--sample-data",
        action="store_true",
        help="load generated customers into the source table if it does not exist",
    )
    setup.add_argument(
        "--submitter-group",
        help="Google group of the people who submit runs and build images from a laptop",
    )
    setup.add_argument(
        "--viewer-group", help="Google group of the people who inspect runs (read access)"
    )
    setup.add_argument(
        "--github-repository",
        metavar="ORG/REPO",
        help="let this repository's GitHub Actions act as churn-ci (Workload Identity "
        "Federation; no key)",
    )
    setup.set_defaults(command=_setup)
    check = commands.add_parser(
        "check", parents=[common], help="check a Google Cloud project is ready (read-only)"
    )
    check.add_argument("--source", help="customer table (default bq://PROJECT.churn.customers)")
    check.add_argument("--submitter-group", help="also check this group can submit and build")
    check.add_argument("--viewer-group", help="also check this group can inspect runs")
    check.set_defaults(command=_check)
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
    "experiment",
    "outcomes",
    "submitter_group",
    "viewer_group",
)


# Settings whose flag is not named after them (for the one-line error naming the flag).
_FLAGS = {
    "predictions": "--output",
    "score_batch_rows": "--batch-rows",
    "score_workers": "--workers",
}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in _SETTING_FLAGS}


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.parameters import pipeline_arguments

    parse_uri(settings.source_uri)  # a malformed URI fails here, not in step 1
    _check_registry(settings)
    if settings.runs_on_vertex:
        return _on_vertex("training", {}, settings, args, _print_training)
    if args.dry_run:
        return _local_dry_run("training", {}, settings)
    settings = _registration_image(settings)
    training_pipeline = _pipeline("training", settings)
    if settings.source is None:
        _ensure_sample_data(settings)
    check_source(settings.source_uri)  # a missing table fails here, not in step 1
    arguments = pipeline_arguments(training_pipeline, settings, vertex=False)
    record = _run(training_pipeline, arguments, settings, args)
    if record.status != "succeeded":
        return 1
    summary = record.summary or {}
    summary["report"] = str(_keep_report(Path(summary["report"]), summary["run_id"], settings))
    return _print_training(summary, args)


def _print_training(summary: dict[str, Any], args: argparse.Namespace) -> int:
    metrics = summary["metrics"]
    console.print(
        f"[bold]model v{summary['model_version']}[/bold] ({summary['best_model']}): "
        f"ROC-AUC {metrics['roc_auc']:.3f}, PR-AUC {metrics['pr_auc']:.3f}, "
        f"F1 {metrics['f1']:.3f} (precision {metrics['precision']:.3f}, "
        f"recall {metrics['recall']:.3f}) on {summary['rows']['test']:,} held-out customers"
    )
    interval, probabilities = summary["interval"], summary["probabilities"]
    console.print(
        f"calibration {summary['calibration']} (resampling {summary['resampling']}): "
        f"Brier {metrics['brier']:.3f}, ECE {metrics['ece']:.3f}, mean probability "
        f"{probabilities['mean_probability']:.3f} vs churn rate {probabilities['churn_rate']:.3f}"
        + (
            f"; test {interval['metric']} 95% interval "
            f"{interval['low_high'][0]:.3f} to {interval['low_high'][1]:.3f}"
            if interval["low_high"]
            else ""
        )
    )
    verdict = "[green]promoted to champion[/green]" if summary["promoted"] else "not promoted"
    console.print(f"{verdict}: {summary['promotion_reason']}")
    rows = summary["rows"]
    console.print(
        f"rows: {rows['read']:,} read, {rows['rejected']:,} rejected "
        f"({rows['duplicates']:,} duplicates), {rows['train']:,} train, {rows['test']:,} test"
    )
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
    """A malformed registry URI, or a damaged local alias file or champion record, fails
    here, with one line, not in a pipeline step."""
    from components.registry import LocalRegistry, open_registry

    registry = open_registry(settings.registry_uri)
    if isinstance(registry, LocalRegistry):
        registry.champion()


def _train_json(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "status", "model_version", "promoted", "promotion_reason", "best_model")
    return {k: summary[k] for k in keys} | {
        "resampling": summary["resampling"],
        "calibration": summary["calibration"],
        "metrics": summary["metrics"],
        "interval": summary["interval"],
        "probabilities": summary["probabilities"],
        "champion": summary["champion"],
        "cv": summary["cv"],
        "rows": summary["rows"],
        "report": summary["report"],
    }


def _as_of_date(text: str) -> str:
    """Check a --as-of date early; the pipeline gets it as text ("" = today when it runs)."""
    from components.dates import resolve_as_of

    if not text.strip():
        return ""
    try:
        return resolve_as_of(text).isoformat()
    except ChurnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _score(args: argparse.Namespace, settings: Settings) -> int:
    from components.warehouse import check_output, require_output
    from pipelines.parameters import pipeline_arguments

    parse_uri(settings.source_uri)
    _check_registry(settings)
    require_output(settings.predictions_uri)
    _check_not_future(args.as_of, settings)
    run = {"model_ref": args.model, "as_of": args.as_of}
    if settings.runs_on_vertex:
        return _on_vertex("scoring", run, settings, args, _print_scoring)
    if args.dry_run:
        return _local_dry_run("scoring", run, settings)
    scoring_pipeline = _pipeline("scoring", settings)
    if settings.source is None:
        _ensure_sample_data(settings)
    # Found now, not after every customer is scored.
    check_source(settings.source_uri)
    check_output(settings.predictions_uri)
    arguments = pipeline_arguments(scoring_pipeline, settings, vertex=False, run=run)
    record = _run(scoring_pipeline, arguments, settings, args)
    if record.status != "succeeded":
        return 1
    summary = record.summary or {}
    summary["report"] = str(_keep_report(Path(summary["report"]), summary["run_id"], settings))
    return _print_scoring(summary, args)


def _monitor(args: argparse.Namespace, settings: Settings) -> int:
    """Run the monitoring pipeline; when it finds a retraining due, start a training run
    (locally it runs, with a project it is submitted)."""
    from components.warehouse import require_output
    from pipelines.parameters import pipeline_arguments

    _check_registry(settings)
    require_output(settings.predictions_uri)
    parse_uri(settings.outcomes_uri)
    _check_not_future(args.as_of, settings)
    run = {"model_ref": args.model, "as_of": args.as_of}

    def finish(summary: dict[str, Any], args: argparse.Namespace) -> int:
        code = _print_monitoring(summary, args)
        if code == 0 and summary.get("retrain_due"):
            console.print("realized ROC-AUC is under the promotion floor: starting a training run")
            return _train(args, settings)
        return code

    if settings.runs_on_vertex:  # with --wait, the summary comes back and may retrain
        return _on_vertex("monitoring", run, settings, args, finish)
    if args.dry_run:
        return _local_dry_run("monitoring", run, settings)
    monitoring_pipeline = _pipeline("monitoring", settings)
    try:
        check_source(settings.predictions_uri)
    except ChurnError as exc:
        raise ChurnError(f"{exc}: score first with `python submit.py score`") from None
    arguments = pipeline_arguments(monitoring_pipeline, settings, vertex=False, run=run)
    record = _run(monitoring_pipeline, arguments, settings, args)
    if record.status != "succeeded":
        return 1
    summary = record.summary or {}
    summary["report"] = str(_keep_report(Path(summary["report"]), record.run_id, settings))
    return finish(summary, args)


def _print_monitoring(summary: dict[str, Any], args: argparse.Namespace) -> int:
    console.print(
        f"[bold]{summary['dates']} scoring dates measured[/bold] up to {summary['as_of_date']} "
        f"with model v{summary['model_version']} -> {summary['performance_output']}",
        markup=True,
    )
    offers = summary.get("offers") or {}
    if offers.get("control"):
        console.print(
            f"offers: {100 * offers['effect']:.1f} customers kept per 100 offers (95% interval "
            f"{100 * offers['effect_low']:.1f} to {100 * offers['effect_high']:.1f})"
        )
    for key in summary["alerts"]:
        sent = "sent" if key in summary["alerts_sent"] else "already sent today"
        console.print(f"alert ({sent}): {key}", markup=False)
    console.print(f"report: {summary['report']}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    """Send one test alert through every configured channel."""
    from components.monitoring.alerts import Alert, Channels, deliver

    channels = Channels.from_settings(settings)
    if not channels.configured:
        raise ChurnError(
            "no alert channel is configured: set smtp_host and alert_email_to, or "
            "alert_webhook (churn.toml or CHURN_* variables)"
        )
    test = Alert("test", "test alert from churn-pipelines",
                 "If you read this, alerts reach you. Nothing is wrong.")  # fmt: skip
    deliver([test], channels)
    console.print(f"test alert sent by {' and '.join(channels.configured)}")
    return 0


def _check_not_future(as_of: str, settings: Settings) -> None:
    """Predictions are dated the day they are scored: a later --as-of would publish rows
    for a scoring that has not happened (and replace them when that day's run comes)."""
    from components.dates import resolve_as_of

    if not as_of:
        return
    today = resolve_as_of("", time_zone=settings.time_zone)
    if resolve_as_of(as_of) > today:
        raise SettingsError(
            f"--as-of {as_of} is after today ({today} in {settings.time_zone}): predictions are "
            "dated the day they are scored; give today or an earlier date, or leave it out"
        )


def _local_dry_run(name: str, run: dict[str, Any], settings: Settings) -> int:
    """What a local run would do, as one JSON line, without running, loading sample data,
    registering or publishing anything (nothing under `home` is created or changed)."""
    from pipelines.parameters import pipeline_arguments

    pipeline_func = _pipeline(name, settings)
    arguments = pipeline_arguments(pipeline_func, settings, vertex=False, run=run)
    plan = {
        "dry_run": True,
        "runs_on": "this machine (kfp.local)",
        "pipeline": pipeline_func.name,
        "home": str(settings.home),
        "sample_data": settings.source is None,
        "arguments": arguments,
    }
    print(json.dumps(plan, default=str))
    console.print(
        f"dry run: {pipeline_func.name} would run on this machine with the arguments printed; "
        "nothing was run, registered or published",
        markup=False,
    )
    return 0


def _print_scoring(summary: dict[str, Any], args: argparse.Namespace) -> int:
    rows, tiers, drift = summary["rows"], summary["tiers"], summary["drift"]
    console.print(
        f"[bold]{rows['scored']:,} customers scored[/bold] for {summary['as_of_date']} with "
        f"model v{summary['model_version']}: expected churn rate (mean probability) "
        f"{summary['expected_churn_rate']:.1%}, flagged at the threshold "
        f"{summary['flagged_share']:.1%}; "
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
    console.print(f"report: {summary['report']}")
    if args.json:
        keys = ("run_id", "status", "model_version", "as_of_date", "output", "rejects_output")
        extra = ("rows", "expected_churn_rate", "flagged_share", "tiers", "unseen_categories")
        extra += ("missing_values", "drift", "exports", "report")
        print(json.dumps({k: summary[k] for k in (*keys, *extra)}))
    return 0


def _pipeline(name: str, settings: Settings):
    from pipelines.compiling import build_pipeline

    return build_pipeline(name, settings)


def _on_vertex(name, run: dict[str, Any], settings: Settings, args, print_summary) -> int:
    """Compile, submit (or with --dry-run print the requests), and with --wait follow the
    run step by step and print the same summary as a local run."""
    import tempfile

    import yaml
    from rich.markup import escape

    from pipelines import vertex
    from pipelines.compiling import compile_pipeline
    from pipelines.parameters import pipeline_arguments

    settings = _pinned(settings, args.dry_run)
    pipeline_func = _pipeline(name, settings)
    arguments = pipeline_arguments(pipeline_func, settings, vertex=True, run=run)
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(name, Path(tmp) / f"{name}.yaml", settings)
        spec = yaml.safe_load(path.read_text())
    job = vertex.pipeline_job(
        settings, arguments, display_name=pipeline_func.name, pipeline_spec=spec
    )
    job_id = vertex.job_id(pipeline_func.name)
    if args.dry_run:
        print(vertex.create_job_request(settings, job, job_id).line())
        return 0
    with console.status(f"submitting {job_id} to Vertex AI Pipelines"):
        created = vertex.submit_job(settings, job, job_id)
    console.print(f"[bold]{pipeline_func.name}[/bold] submitted to Vertex AI: {created.name}")
    if settings.experiment:
        console.print(
            f"it joins experiment {settings.experiment!r} when Vertex starts it (step 0)",
            markup=False,
        )
    console.print(f"console: {vertex.console_url(settings, job_id)}", markup=False)
    if not args.wait:
        if args.json:
            print(json.dumps({"run_id": job_id, "status": "submitted", "name": created.name}))
        return 0
    names = vertex.display_names(pipeline_func.pipeline_spec)
    status, on_step = _progress()
    with status:
        job = vertex.follow(settings, created.name, names, on_step)
    if job.state != job.state.PIPELINE_STATE_SUCCEEDED:
        step, error = vertex.failure(settings, job, names)
        where = f" in step {step}" if step else ""
        # Vertex's words carry brackets ("The failed tasks are: [ingest]"): not markup.
        console.print(f"[red]error:[/red] run {job_id} failed{where}: {escape(error)}")
        if args.json:
            print(json.dumps({"run_id": job_id, "status": "failed", "error": error}))
        return 1
    seconds = (job.end_time - job.start_time).total_seconds() if job.start_time else 0.0
    console.print(f"run {job_id} succeeded in {seconds:.1f}s")
    summary = vertex.run_summary(job)
    if summary is None:
        raise vertex.VertexError(f"run {job_id} succeeded but its summary step left no summary")
    return print_summary(summary, args)


def _progress():
    """The one progress display of local and Vertex runs: a status line while a step runs,
    a line per finished step."""
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

    return status, on_step


def _run(pipeline_func, arguments: dict[str, Any], settings: Settings, args: argparse.Namespace):
    """Run locally with one line of progress per step; print the error line on failure."""
    from pipelines.runner import run_locally

    status, on_step = _progress()
    console.print(f"[bold]{pipeline_func.name}[/bold] on this machine (kfp.local)")
    with status:
        record = run_locally(pipeline_func, arguments, home=settings.home, on_step=on_step)
    if record.status != "succeeded":
        where = f" in step {record.failed_step}" if record.failed_step else ""
        console.print(f"[red]error:[/red] run {record.run_id} failed{where}: {record.error}")
        console.print(f"[dim]log: {record.log}[/dim]")
        _alert_failed_run(record, settings)
        if args.verbose:
            console.print(Path(record.log).read_text())
        if args.json:
            print(json.dumps({"run_id": record.run_id, "status": "failed", "error": record.error}))
    else:
        console.print(f"run {record.run_id} succeeded in {record.seconds:.1f}s")
    return record


def _alert_failed_run(record, settings: Settings) -> None:
    """Tell the alert channels, if any, that a local run failed (on Vertex AI the exit
    handler's e-mail does); a channel that cannot be reached is reported, not raised over
    the run's own error."""
    from components.monitoring.alerts import AlertError, Channels, deliver, failed_run

    channels = Channels.from_settings(settings)
    if not channels.configured:
        return
    alert = failed_run(record.pipeline, record.run_id, record.error or "", record.failed_step)
    try:
        deliver([alert], channels)
    except AlertError as exc:
        console.print(f"[yellow]warning:[/yellow] the failure alert was not sent: {exc}")


def _ensure_sample_data(settings: Settings) -> None:
    """On a first local run, fill the embedded warehouse with generated customers."""
    from components.data.sample_data import generate_customers
    from components.warehouse import table_exists, write_table

    if table_exists(settings.source_uri):
        return
    console.print(
        f"loading {settings.sample_rows:,} generated sample customers into {settings.source_uri}"
    )
    write_table(generate_customers(settings.sample_rows, seed=settings.seed), settings.source_uri)


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.runner import list_runs

    if settings.runs_on_vertex:
        rows = _vertex_run_rows(settings)
    else:
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
    return _row(
        record.run_id,
        record.pipeline,
        record.status,
        record.started_at,
        record.seconds,
        record.summary or {},
        record.error,
    )


def _row(run_id, pipeline, status, started_at, seconds, summary, error) -> dict[str, Any]:
    """One run with its headline: test ROC-AUC for training, rows scored for scoring."""
    if "metrics" in summary:
        headline = f"ROC-AUC {summary['metrics']['roc_auc']:.3f}"
    elif "rows" in summary:
        headline = f"{summary['rows']['scored']:,} scored"
    else:
        headline = error or ""
    return {
        "run_id": run_id,
        "pipeline": pipeline,
        "status": status,
        "started_at": started_at,
        "seconds": seconds,
        "model_version": summary.get("model_version"),
        "roc_auc": summary.get("metrics", {}).get("roc_auc"),
        "headline": headline,
    }


def _vertex_run_rows(settings: Settings) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from pipelines import vertex

    rows = []
    for job in vertex.list_jobs(settings):
        started = job.start_time or job.create_time
        ended = job.end_time or datetime.now(UTC)
        succeeded = job.state == job.state.PIPELINE_STATE_SUCCEEDED
        failed = job.state == job.state.PIPELINE_STATE_FAILED
        # A listing has no task details: a finished run is read whole for its figures, a
        # failed one for its failed step (Vertex's own error names no step and no cause).
        whole = vertex.get_job(settings, job.name) if succeeded or failed else job
        rows.append(
            _row(
                job.name.rsplit("/", 1)[-1],
                job.display_name,
                job.state.name.removeprefix("PIPELINE_STATE_").lower(),
                started.isoformat(timespec="seconds") if started else "",
                round((ended - started).total_seconds(), 1) if started else 0.0,
                (succeeded and vertex.run_summary(whole)) or {},
                vertex.run_error(settings, whole) if failed else (job.error.message or None),
            )
        )
    return rows


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    """Compile both pipelines and upload them to the template repository."""
    _require_project(settings)
    settings = _pinned(settings, args.dry_run)
    for published in _published_templates(settings, args.dry_run).values():
        console.print(
            f"published {published.package} {published.version} "
            f"({', '.join(published.tags)}): {published.template_uri}",
            markup=False,
        )
    return 0


def _published_templates(settings: Settings, dry_run: bool) -> dict[str, Any]:
    """Compile and upload both templates; with `dry_run`, print the uploads instead and
    return what they would publish (the version is the YAML's sha256 either way)."""
    import tempfile

    from pipelines import templates
    from pipelines.compiling import PIPELINES, compile_pipeline

    _require_project(settings)
    tags = templates.template_tags()
    published = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PIPELINES:
            pipeline_func = _pipeline(name, settings)
            path = compile_pipeline(name, Path(tmp) / f"{name}.yaml", settings)
            if dry_run:
                print(templates.upload_request(settings, path, tags).line())
                version = templates.template_version(path)
                published[name] = templates.Published(
                    pipeline_func.name,
                    version,
                    tags,
                    f"{settings.template_registry_uri}/{pipeline_func.name}/{version}",
                )
            else:
                with console.status(f"uploading {path.name}"):
                    published[name] = templates.publish_template(settings, path, tags)
    return published


def _schedule(args: argparse.Namespace, settings: Settings) -> int:
    """Create or update (or list, pause, resume, delete) the weekly retraining and the daily
    scoring; creating pins the templates it publishes first by their sha256 version."""
    from pipelines import schedules

    _require_project(settings)
    backend = schedules.open_schedules(settings, args.scheduler)
    crons = {
        "training": settings.training_schedule,
        "scoring": settings.scoring_schedule,
        "monitoring": settings.monitoring_schedule,
    }
    plan = {key: (name, crons[key]) for key, name in schedules.SCHEDULE_NAMES.items()}
    if args.action == "list":
        states = {name: backend.get(name) for name, _cron in plan.values()}
        if args.json:
            absent = {"state": "absent"}
            print(json.dumps([asdict(s) if s else {"name": n} | absent for n, s in states.items()]))
            return 0
        table = Table("schedule", "state", "cron", "time zone", "template", "last run")
        for name, state in states.items():
            if state is None:
                table.add_row(name, "absent", "", "", "", "")
            else:
                last = (
                    f"{state.last_run}: {state.last_error}" if state.last_error else state.last_run
                )
                table.add_row(
                    name, state.state, state.cron, state.time_zone, state.template_uri, last
                )
        Console(width=None if sys.stdout.isatty() else 200).print(table)
        return 0
    if args.action != "apply":
        done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[args.action]
        for name, _cron in plan.values():
            if args.dry_run:
                raise ChurnError(
                    "--dry-run shows what creating or updating sends; drop --" + args.action
                )
            getattr(backend, args.action)(name)
            console.print(f"{name}: {done}")
        return 0
    settings = _pinned(settings, args.dry_run)
    templates = _published_templates(settings, args.dry_run)
    # A monitoring run that finds a retraining due starts the weekly schedule's training run.
    retrain_job = schedules.retraining_job(
        settings, _pipeline("training", settings), templates["training"].template_uri
    )
    for key, (name, cron) in plan.items():
        run = {"retrain_job": retrain_job} if key == "monitoring" else None
        scheduled = schedules.scheduled_run(
            settings, name, cron, _pipeline(key, settings), templates[key].template_uri, run
        )
        if args.dry_run:
            for request in backend.plan(scheduled):
                print(request.line())
            continue
        outcome = backend.apply(scheduled)
        console.print(
            f"{name} {outcome}: {cron} ({settings.time_zone}) -> {templates[key].template_uri}",
            markup=False,
        )
    return 0


def _setup(args: argparse.Namespace, settings: Settings) -> int:
    """Make the project ready (or with --dry-run print what that sends)."""
    from pipelines import project_setup

    _require_project(settings)
    options = project_setup.Options(
        github_repository=args.github_repository, sample_data=args.sample_data
    )

    def report(what: str, outcome: str) -> None:
        console.print(f"{what}: {outcome}", markup=False)

    project_setup.run(settings, options, dry_run=args.dry_run, report=report)
    if not args.dry_run:
        console.print(
            f"project {settings.project} is set up; check it: python submit.py check "
            f"--project {settings.project} --region {settings.region}",
            markup=False,
        )
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    """Print one line per checked item; exit 1 when any fails."""
    from pipelines import project_check

    _require_project(settings)
    with console.status(f"checking project {settings.project}"):
        findings = project_check.run_checks(settings)
    for finding in findings:
        style = "red" if not finding.ok else "yellow" if finding.warning else ""
        console.print(finding.line(), style=style, markup=False)
    failed = sum(not finding.ok for finding in findings)
    warned = sum(finding.warning for finding in findings)
    warnings = f" ({warned} warning{'s' * (warned > 1)})" if warned else ""
    if failed:
        console.print(f"[red]{failed} of {len(findings)} checks failed[/red]{warnings}")
    else:
        console.print(f"[green]all {len(findings)} checks passed[/green]{warnings}")
    if args.json:
        print(json.dumps(project_check.as_json(findings)))
    return 1 if failed else 0


def _pinned(settings: Settings, dry_run: bool) -> Settings:
    """Both images by digest, looked up in Artifact Registry: a run, template or schedule
    never names an image that was not pushed, nor one a re-pushed tag changes later. A dry
    run sends nothing, so it keeps the configured names."""
    from pipelines import images

    if dry_run:
        console.print("[dim]dry run: images as configured; a real run sends them by digest[/dim]")
        return settings
    with console.status("looking up the images in Artifact Registry"):
        return images.pinned(settings)


def _registration_image(settings: Settings) -> Settings:
    """A local run registering to Vertex AI registers its model versions with the serving
    image by digest, checked to exist, as a run on Vertex does (Model.upload ingests it)."""
    from components.registry import open_registry
    from components.registry.vertex import VertexRegistry
    from pipelines import images

    registry = open_registry(settings.registry_uri)
    if not isinstance(registry, VertexRegistry):
        return settings
    image = settings.serving_image or registry.serving_image
    with console.status("looking up the serving image in Artifact Registry"):
        pinned = images.resolve_image(image, images.registry_client(settings))
    return settings.replace(serving_image=pinned)


def _build(args: argparse.Namespace, settings: Settings) -> int:
    """Build and push both images; print each by its pushed digest."""
    from pipelines import build

    _require_project(settings)
    if args.dry_run:
        if args.builder == "cloud-build":
            lines = build.dry_run_cloud_build(settings)
        else:
            lines = build.dry_run_local_build(settings, args.builder)
        for line in lines:
            print(line)
        return 0
    targets = build.build_targets(settings)
    console.print(
        f"[bold]building[/bold] {', '.join(t.base for t in targets.values())} "
        f"({', '.join(build.build_tags(settings))}) with {args.builder}",
        markup=True,
    )
    status, on_step = _progress()
    with status:
        if args.builder == "cloud-build":
            pushed = build.cloud_build(settings, on_step)
        else:
            from pipelines.vertex import access_token

            pushed = build.local_build(settings, args.builder, on_step, access_token())
    for name, uri in pushed.items():
        console.print(f"{name}: {uri}", markup=False)
    if args.json:
        print(json.dumps(pushed))
    return 0


def _require_project(settings: Settings) -> None:
    if not settings.runs_on_vertex:
        raise ChurnError("no Google Cloud project set: pass --project or set CHURN_PROJECT")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve a registered model with the model server its Vertex endpoint runs, on this
    machine only, until Ctrl-C: clients can be tried before anything is deployed."""
    from components.registry import open_registry

    registry = open_registry(settings.registry_uri)
    version = registry.get(args.model).version
    # A copy (a download from a Vertex registry), hash-checked as it is written.
    model_dir = settings.home / "serving" / f"v{version:04d}"
    entry = registry.fetch(version, model_dir)
    # Imported once there is a model to serve: the model server's libraries take seconds.
    from components.serving.server import start_model_server

    with console.status(f"starting the model server for model v{entry.version}"):
        server = start_model_server(
            model_dir,
            args.port,
            settings=settings,
            log_path=settings.home / f"model-server-{args.port}.log",
            sha256=entry.sha256,
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
    from components.data.sample_data import generate_customers

    customers = generate_customers(2, seed=settings.seed, messy=False)
    customers = customers.drop(columns=TELCO_CHURN.label_column).astype(object)
    instances = customers.where(customers.notna(), None).to_dict("records")
    path = settings.home / "serve-example.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"instances": instances}, indent=2))
    return path


if __name__ == "__main__":
    sys.exit(main())
