"""Issue 20 end to end on a laptop: train, score 30 consecutive dates with a control group,
outcomes with a known offer effect and a drift from day 20, then the monitoring pipeline
under kfp.local: performance against the test ROC-AUC, the estimate tracking it, the offer
effect recovered, a drift and a performance alert delivered to a real SMTP server and a
webhook receiver on 127.0.0.1, and a re-run that changes nothing."""

import io
import json
from contextlib import redirect_stdout
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import alert_receivers
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from alert_receivers import WEBHOOK_PATH, SlackWebhook
from google.protobuf import json_format
from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineSpec
from sklearn.metrics import roc_auc_score

import submit
from components.contract import TELCO_CHURN
from components.data.sample_data import generate_customers
from components.data.sample_outcomes import daily_customers, generate_outcomes
from components.data.split import split_train_test
from components.data.validate import validate
from components.model.search import CandidateResult
from components.model.train import fit_final
from components.monitoring.alerts import Channels
from components.monitoring.drift import reference_profile, save_profile
from components.monitoring.monitor import alert_plan, measure_and_write, send_once
from components.registry import LocalRegistry, save_model
from components.scoring.chunked import stage_scores
from components.scoring.publish import publish_scores
from components.scoring.staged import ScoringJob
from components.settings import Settings
from components.warehouse import write_table
from pipelines.compiling import compile_pipeline

START = date(2026, 10, 1)
DAYS = 30
DRIFT_DAY = 20
WINDOW = 5
OFFER_EFFECT = 0.3
DRIFT_MIX = 0.8
ROWS = 2000


@pytest.fixture
def receivers():
    yield from alert_receivers.running()


def _champion(home: Path):
    """A logistic regression registered with its honest test ROC-AUC and profile."""
    clean = validate(generate_customers(8000, seed=31), source="fixture").clean
    train, test = split_train_test(clean, test_size=0.5, seed=31)
    best = CandidateResult(
        "logistic_regression", {"C": 0.1}, [], [], np.empty(0), 0.0, resampling="none"
    )
    model = fit_final(train, best, seed=31)
    held_out = model.predict_proba(test[TELCO_CHURN.feature_names])[:, 1]
    test_auc = roc_auc_score(test[TELCO_CHURN.label_column].to_numpy(), held_out)
    model_dir = save_model(model, home / "fitted").parent
    save_profile(reference_profile(train, held_out), model_dir)
    registry = LocalRegistry(home / "registry")
    entry = registry.register(
        model_dir, best_model=best.family, threshold=0.5, metrics={"roc_auc": test_auc},
        data_fingerprint="fixture", run_id="fixture",
    )  # fmt: skip
    registry.promote(entry.version)
    return model, test_auc


def _score_days(model, home: Path, output: str) -> tuple[pd.DataFrame, pd.Series]:
    """30 consecutive dates scored with the plain functions, a control group of half the
    `high` tier, customers shifting from day 20."""
    truths = []
    job = ScoringJob(
        source="sample", threshold=0.5, high=0.6, medium=0.3, model_version=1, as_of=START,
        scored_at=datetime(2026, 10, 1, tzinfo=UTC), run_id="day", control_share=0.5,
        control_salt="test-campaign",
    )  # fmt: skip
    for day in range(DAYS):
        customers, truth = daily_customers(ROWS, 7, day, shifted=day >= DRIFT_DAY)
        truths.append(truth)
        as_of = START + timedelta(days=day)
        batches = pa.Table.from_pandas(customers, preserve_index=False).to_batches()
        staged = home / "staged" / str(day)
        stage_scores(batches, model, replace(job, as_of=as_of), staged, tolerance=0.05)
        publish_scores(staged, output_uri=output, as_of=as_of)
    return pd.concat(truths)


@pytest.mark.slow
def test_monitoring_closes_the_loop_end_to_end(
    tmp_path: Path, receivers, monkeypatch, no_config, capsys
):
    mailbox, smtp_port, webhook_port = receivers
    home = tmp_path / "home"
    warehouse = home / "warehouse.duckdb"
    output = f"duckdb://{warehouse}?table=churn_predictions"
    outcomes_uri = f"duckdb://{warehouse}?table=churn_outcomes"
    model, test_auc = _champion(home)
    truth = _score_days(model, home, output)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        predictions = con.sql("SELECT * FROM churn_predictions").df()
    drift_start = START + timedelta(days=DRIFT_DAY)
    outcomes = generate_outcomes(
        predictions, truth, window_days=WINDOW, seed=3, offer_effect=OFFER_EFFECT,
        drift_start=drift_start, drift_mix=DRIFT_MIX,
    )  # fmt: skip
    write_table(outcomes, outcomes_uri)

    today = START + timedelta(days=DAYS - 1)
    settings = Settings(
        home=home, predictions=output, outcomes=outcomes_uri, registry=str(home / "registry"),
        outcome_window_days=WINDOW, bootstrap_samples=200, smtp_host="127.0.0.1",
        smtp_port=smtp_port, smtp_security="none", alert_email_to="retention@example.com",
        alert_webhook=f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",
    )  # fmt: skip
    # `submit.py monitor` as a user runs it (in-process: the steps are processes anyway).
    for name in ("home", "predictions", "outcomes", "registry", "outcome_window_days",
                 "bootstrap_samples", "smtp_host", "smtp_port", "smtp_security",
                 "alert_email_to", "alert_webhook"):  # fmt: skip
        monkeypatch.setenv(f"CHURN_{name.upper()}", str(getattr(settings, name)))
    out = io.StringIO()
    with redirect_stdout(out):
        code = submit.main(["monitor", "--config", str(no_config), "--as-of", str(today), "--json"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert Path(summary["report"]).parent == (home / "reports").resolve()

    with duckdb.connect(str(warehouse), read_only=True) as con:
        table = con.sql("SELECT * FROM churn_performance ORDER BY as_of_date").df()
    assert len(table) == DAYS and table["as_of_date"].is_unique
    closed = table[table["outcome_closed"]]
    assert len(closed) == DAYS - WINDOW  # outcome windows closed by the 30th day
    before = closed[pd.to_datetime(closed["as_of_date"]).dt.date < drift_start]
    # Before the drift: the test ROC-AUC inside each date's realized 95% interval (at most
    # 3 dates of 20 out: with honest intervals, more happens 1.6% of the time), and the
    # estimate from the scores alone tracking the realized ROC-AUC.
    covered = (before["roc_auc_low"] <= test_auc) & (test_auc <= before["roc_auc_high"])
    assert covered.sum() >= len(before) - 3, before[["roc_auc", "roc_auc_low", "roc_auc_high"]]
    assert abs(before["roc_auc"].mean() - test_auc) < 0.01
    assert before["estimate_error"].abs().mean() < 0.03
    assert (before["no_outcome"] > 0).all()  # counted, not guessed
    after = closed[pd.to_datetime(closed["as_of_date"]).dt.date >= drift_start]
    assert (after["roc_auc"] < settings.promotion_floor).all()

    # The offer effect: control churn minus offered churn, all closed dates together, has
    # the injected effect inside its interval. Expected: the effect times each offered
    # customer's churn probability before the offer (after the drift, in expectation, the
    # mix of their own and the day's mean).
    high = predictions[predictions["treatment_group"] == "offer"]
    p = truth.reindex(high["customer_id"]).to_numpy()
    day = pd.to_datetime(high["as_of_date"]).dt.date.to_numpy()
    day_mean = (
        pd.Series(truth.to_numpy())
        .groupby(
            pd.to_datetime(
                predictions.set_index("customer_id").loc[truth.index, "as_of_date"]
            ).dt.date.to_numpy()
        )
        .mean()
    )
    drifted = day >= drift_start
    p = np.where(drifted, (1 - DRIFT_MIX) * p + DRIFT_MIX * day_mean.reindex(day).to_numpy(), p)
    in_closed = day <= today - timedelta(days=WINDOW)
    expected = OFFER_EFFECT * p[in_closed].mean()
    offers = summary["offers"]
    assert offers["effect_low"] < expected < offers["effect_high"], offers
    assert offers["control"] > 500

    # Alerts: drift of the latest scores and realized ROC-AUC under the floor, by e-mail and
    # webhook, with the digest.
    sent = summary["alerts_sent"]
    assert any(key.startswith("drift:") for key in sent), sent
    assert any(key.startswith("performance: realized ROC-AUC") for key in sent), sent
    assert any(key.startswith("digest:") for key in sent)
    subjects = [m[2] for m in mailbox.messages]
    assert len(mailbox.messages) == len(sent) == len(SlackWebhook.received)
    assert any("Subject: [churn] score drift on 2026-10-30" in m for m in subjects)
    assert all(m[1] == ["retention@example.com"] for m in mailbox.messages)
    assert any("realized ROC-AUC" in p["text"] for p in SlackWebhook.received)
    assert Path(summary["report"]).read_text().count("<img") == 5

    # A re-run the same day changes nothing: the same performance rows, no alert twice.
    result = measure_and_write(
        registry_uri=str(home / "registry"), model_ref="champion", predictions_uri=output,
        outcomes_uri=outcomes_uri, today=today, window_days=WINDOW, top_n=settings.lift_top_n,
        samples=200, seed=settings.seed, promotion_floor=settings.promotion_floor,
        retrain_below_floor=0, retrain_windows=5,
    )  # fmt: skip
    with duckdb.connect(str(warehouse), read_only=True) as con:
        again = con.sql("SELECT * FROM churn_performance ORDER BY as_of_date").df()
    pd.testing.assert_frame_equal(table, again)
    plan = alert_plan(
        result, report="", deadline_passed=True, scores_deadline="09:00",
        drift_threshold=settings.drift_threshold, promotion_floor=settings.promotion_floor,
        high_tier_limit=0, digest_link="", digest_customer_ids=False,
    )  # fmt: skip
    rerun = send_once(result, plan, Channels.from_settings(settings))
    assert rerun["alerts_sent"] == [] and len(mailbox.messages) == len(sent)


def test_monitoring_pipeline_compiles_with_numbered_steps(tmp_path: Path):
    path = compile_pipeline("monitoring", tmp_path / "monitoring.yaml", Settings())
    spec = yaml.safe_load(path.read_text())
    json_format.ParseDict(spec, PipelineSpec())
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    names = sorted(
        task["taskInfo"]["name"]
        for dag in dags
        for task in dag["tasks"].values()
        if not task["componentRef"]["name"].startswith("comp-condition-")  # dsl.If groups
    )
    assert names == [
        "0. Join experiment",
        "1. Measure performance",
        "2. Trend page",
        "3. Alerts and digest",
        "4. Start retraining",
    ]
    assert spec["root"]["inputDefinitions"]["parameters"]["as_of"]["defaultValue"] == ""


def test_on_vertex_a_run_e_mails_its_outcome_from_an_exit_handler(tmp_path: Path):
    from pipelines.notifications import NOTIFIED
    from pipelines.vertex import display_names

    assert NOTIFIED == ("training", "scoring")  # the same wrapper: scoring's spec stands for both
    name = "scoring"

    vertex = Settings(project="acme-corp", alert_email_to="a@example.com, b@example.com")
    path = compile_pipeline(name, tmp_path / f"{name}.yaml", vertex)
    spec = json_format.ParseDict(yaml.safe_load(path.read_text()), PipelineSpec())
    tasks = spec.root.dag.tasks
    (exit_name,) = [n for n, t in tasks.items() if t.trigger_policy.strategy]
    notify = tasks[exit_name]
    assert notify.trigger_policy.strategy == notify.trigger_policy.ALL_UPSTREAM_TASKS_COMPLETED
    recipients = notify.inputs.parameters["recipients"].runtime_value.constant
    assert list(recipients.list_value) == ["a@example.com", "b@example.com"]
    assert notify.inputs.parameters["pipeline_task_final_status"].task_final_status.producer_task
    executor = spec.components[notify.component_ref.name].executor_label
    image = spec.deployment_spec["executors"][executor]["container"]["image"]
    assert image.startswith("gcr.io/ml-pipeline/google-cloud-pipeline-components")
    # The steps (and so `--wait`'s progress and failure lines) are those without it, and
    # the e-mail.
    plain = compile_pipeline(name, tmp_path / "plain.yaml", Settings(project="acme-corp"))
    plain_spec = json_format.ParseDict(yaml.safe_load(plain.read_text()), PipelineSpec())
    steps = sorted(display_names(plain_spec).values())
    assert sorted(display_names(spec).values()) == sorted([*steps, "E-mail the run's outcome"])
    assert spec.root.input_definitions == plain_spec.root.input_definitions
    assert not any(t.trigger_policy.strategy for t in plain_spec.root.dag.tasks.values())
