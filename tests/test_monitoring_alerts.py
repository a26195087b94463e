"""Issue 20, step 5: which figures raise which alert, one delivery path (SMTP and chat
webhook), at most once a day, and `submit.py alerts --test`."""

from datetime import date

import alert_receivers
import pandas as pd
import pytest
from alert_receivers import CHAT_PATH, WEBHOOK_PATH, SlackWebhook

import submit
from components.monitoring.alerts import (
    Alert,
    AlertError,
    Channels,
    check_alerts,
    deliver,
    retrain_due,
    webhook_payload,
)
from components.monitoring.tables import alerts_uri, record_sent, sent_on

DAY = date(2026, 11, 30)


@pytest.fixture
def receivers():
    yield from alert_receivers.running()


def _performance(realized: list[float], high: int = 100) -> pd.DataFrame:
    days = [date(2026, 11, d + 1) for d in range(len(realized))]
    return pd.DataFrame(
        {
            "as_of_date": days,
            "high": high,
            "estimated_roc_auc": 0.84,
            "outcome_closed": [True] * (len(realized) - 1) + [False],
            "roc_auc": [*realized[:-1], float("nan")],
            "roc_auc_low": [r - 0.02 for r in realized],
            "roc_auc_high": [r + 0.02 for r in realized],
        }
    )


def test_each_threshold_raises_its_alert_and_nothing_else():
    calm = _performance([0.84, 0.83, 0.84])
    kwargs = {"drift_threshold": 0.2, "promotion_floor": 0.7, "today": DAY,
              "scores_deadline": "09:00"}  # fmt: skip
    quiet = check_alerts(calm, {date(2026, 11, 3): 0.05}, high_tier_limit=0,
                         scores_today=True, **kwargs)  # fmt: skip
    assert quiet == []
    worse = _performance([0.84, 0.62, 0.84], high=900)
    alerts = check_alerts(
        worse, {date(2026, 11, 3): 0.45}, high_tier_limit=500, scores_today=False, **kwargs
    )
    assert sorted(a.kind for a in alerts) == ["drift", "high_tier", "performance", "scores_missing"]
    text = {a.kind: a.text for a in alerts}
    assert "python submit.py score --as-of 2026-11-30" in text["scores_missing"]
    assert "0.620" in text["performance"] and "python submit.py train" in text["performance"]


def test_retraining_is_due_when_k_of_the_last_n_windows_break_the_floor():
    performance = _performance([0.65, 0.84, 0.66, 0.64, 0.0])
    assert retrain_due(performance, floor=0.7, below=3, windows=4)
    assert not retrain_due(performance, floor=0.7, below=3, windows=2)
    assert not retrain_due(performance, floor=0.7, below=0, windows=4)


def test_alerts_reach_both_channels_once_a_day(receivers, tmp_path):
    mailbox, smtp_port, webhook_port = receivers
    channels = Channels(
        email_to="a@example.com, b@example.com", smtp_host="127.0.0.1", smtp_port=smtp_port,
        smtp_security="none", webhook=f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",
    )  # fmt: skip
    alert = Alert("drift", "score drift on 2026-11-30: PSI 0.45", "The scores moved.",
                  about="2026-11-30")  # fmt: skip
    # A re-run the same day, with a re-scored day's other PSI, finds it sent.
    rerun = Alert("drift", "score drift on 2026-11-30: PSI 0.47", "The scores moved.",
                  about="2026-11-30")  # fmt: skip
    log = alerts_uri(f"duckdb://{tmp_path / 'w.duckdb'}?table=churn_predictions")
    for each in (alert, rerun):
        sent = deliver([each], channels, already_sent=sent_on(log, DAY))
        record_sent(log, DAY, sent)
    assert sent_on(log, DAY) == ["drift: 2026-11-30"]
    assert len(mailbox.messages) == 1 and len(SlackWebhook.received) == 1
    _sender, recipients, content = mailbox.messages[0]
    assert recipients == ["a@example.com", "b@example.com"]
    assert "Subject: [churn] score drift on 2026-11-30: PSI 0.45" in content
    assert SlackWebhook.received[0] == {"text": "*score drift on 2026-11-30: PSI 0.45*\n"
                                                "The scores moved."}  # fmt: skip
    assert sent_on(log, date(2026, 12, 1)) == []  # a new day may send it again


def test_a_refused_webhook_is_reported_in_the_services_words(receivers):
    _mailbox, _smtp, webhook_port = receivers
    channels = Channels(webhook=f"http://127.0.0.1:{webhook_port}/services/T000/B000/WRONG")
    with pytest.raises(AlertError, match="HTTP 404 no_service; check alert_webhook"):
        deliver([Alert("test", "t", "x")], channels)
    assert webhook_payload(Alert("test", "s", "x"), "google_chat") == {"text": "*s*\nx"}
    chat = f"http://127.0.0.1:{webhook_port}{CHAT_PATH}"
    deliver([Alert("drift", "s", "x")], Channels(webhook=chat, webhook_format="google_chat"))
    assert SlackWebhook.received == [{"text": "*s*\nx"}]
    no_token = chat.split("&token=")[0]
    with pytest.raises(AlertError, match="google_chat webhook refused the alert: HTTP 403"):
        deliver(
            [Alert("drift", "s", "x")], Channels(webhook=no_token, webhook_format="google_chat")
        )


def test_alerts_test_command_sends_one_alert(receivers, no_config, monkeypatch, capsys):
    mailbox, smtp_port, webhook_port = receivers
    base = ["alerts", "--test", "--config", str(no_config)]
    assert submit.main(base) == 1
    assert "no alert channel is configured" in capsys.readouterr().err
    for name, value in {
        "CHURN_SMTP_HOST": "127.0.0.1",
        "CHURN_SMTP_PORT": str(smtp_port),
        "CHURN_SMTP_SECURITY": "none",
        "CHURN_ALERT_EMAIL_TO": "team@example.com",
        "CHURN_ALERT_WEBHOOK": f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",
    }.items():
        monkeypatch.setenv(name, value)
    assert submit.main(base) == 0
    assert "test alert sent by email and webhook" in capsys.readouterr().err
    assert len(mailbox.messages) == 1 and len(SlackWebhook.received) == 1
    monkeypatch.setenv("CHURN_SMTP_PORT", "1")  # nothing listens there
    monkeypatch.delenv("CHURN_ALERT_WEBHOOK")
    assert submit.main(base) == 1
    err = capsys.readouterr().err
    assert "could not be sent through 127.0.0.1:1" in err and "Traceback" not in err


def test_a_failed_local_run_is_alerted_through_the_same_path(receivers):
    from components.settings import Settings
    from pipelines.runner import RunRecord

    mailbox, smtp_port, webhook_port = receivers
    settings = Settings(
        smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="none",
        alert_email_to="oncall@example.com",
        alert_webhook=f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",
    )  # fmt: skip
    record = RunRecord(
        run_id="churn-scoring-20261130", pipeline="churn-scoring", status="failed",
        started_at="2026-11-30T08:00:00+00:00", seconds=3.0, log="run.log",
        error="column `MonthlyCharges` missing from bq://acme.churn.customers",
        failed_step="2. Validate and score in chunks",
    )  # fmt: skip
    submit._alert_failed_run(record, settings)
    (text,) = [p["text"] for p in SlackWebhook.received]
    assert text.startswith("*churn-scoring run churn-scoring-20261130 failed*")
    assert "at step 2. Validate and score in chunks: column `MonthlyCharges` missing" in text
    assert (
        "Subject: [churn] churn-scoring run churn-scoring-20261130 failed"
        in (mailbox.messages[0][2])
    )
