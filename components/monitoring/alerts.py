"""Alerts, one path for everything: what to say (`check_alerts`, `digest`, `failed_run`)
and how it is sent (`deliver`: e-mail through SMTP and a Slack or Google Chat webhook),
each alert at most once a day.

An alert is a subject line and a few lines of text saying what is wrong and the command
that deals with it. The same `deliver` sends the monitoring run's alerts, the retention
team's daily digest, a failed local run's alert and `submit.py alerts --test`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage

import pandas as pd

from components.errors import ChurnError, one_line

log = logging.getLogger(__name__)

PASSWORD_VARIABLE = "CHURN_SMTP_PASSWORD"
_TIMEOUT = 20.0


class AlertError(ChurnError):
    """An alert could not be delivered."""


@dataclass(frozen=True)
class Alert:
    """One message: `kind` (failed_run, drift, performance, high_tier, scores_missing,
    retrain, digest, test), a one-line `subject` and the `text`. `about` (the date or run
    it concerns) with `kind` identifies it for deduplication, so a figure that changes on
    a re-run the same day (a PSI, a count) does not send the alert again."""

    kind: str
    subject: str
    text: str
    about: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}: {self.about or self.subject}"

    @property
    def title(self) -> str:
        """How the run summary and the CLI name it."""
        return f"{self.kind}: {self.subject}"


@dataclass(frozen=True)
class Channels:
    """Where alerts go: e-mail recipients through an SMTP server, and a chat webhook."""

    email_to: str = ""
    email_from: str = "churn-pipelines@localhost"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str = ""
    webhook: str = ""
    webhook_format: str = "slack"

    @classmethod
    def from_settings(cls, settings) -> Channels:
        return cls(
            email_to=settings.alert_email_to,
            email_from=settings.alert_email_from,
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            smtp_security=settings.smtp_security,
            smtp_user=settings.smtp_user,
            webhook=settings.alert_webhook,
            webhook_format=settings.alert_webhook_format,
        )

    @property
    def recipients(self) -> list[str]:
        return [a.strip() for a in self.email_to.split(",") if a.strip()]

    @property
    def configured(self) -> list[str]:
        """The channels that are set up: "email" and/or "webhook"."""
        names = []
        if self.smtp_host and self.recipients:
            names.append("email")
        if self.webhook:
            names.append("webhook")
        return names


def check_alerts(
    performance: pd.DataFrame,
    score_psi: Mapping[date, float],
    *,
    drift_threshold: float,
    promotion_floor: float,
    high_tier_limit: int,
    scores_today: bool | None,
    today: date,
    scores_deadline: str,
    report: str = "",
) -> list[Alert]:
    """The alerts the latest figures call for: score drift of the latest scoring date over
    `drift_threshold`; realized ROC-AUC of the latest closed date, or estimated ROC-AUC of
    the latest date, under `promotion_floor`; more `high` customers on the latest date than
    `high_tier_limit` (0: no limit); and, when `scores_today` is False (checked after
    `scores_deadline`), no scores for `today` at all. None (no check) for `scores_today`
    skips the last."""
    alerts = []
    see = f"\nTrend page: {report}" if report else ""
    if scores_today is False:
        alerts.append(
            Alert(
                "scores_missing",
                f"no churn scores for {today} by {scores_deadline}",
                f"The predictions table has no rows for {today} and the deadline "
                f"({scores_deadline}) has passed: the scheduled scoring run did not run or "
                "failed. See `python submit.py runs`, then score with "
                f"`python submit.py score --as-of {today}`.",
                about=str(today),
            )
        )
    if performance.empty:
        return alerts
    latest = performance.sort_values("as_of_date").iloc[-1]
    day = latest["as_of_date"]
    psi = score_psi.get(day, math.nan)
    if psi > drift_threshold:
        alerts.append(
            Alert(
                "drift",
                f"score drift on {day}: PSI {psi:.2f}",
                f"The churn scores of {day} are distributed unlike those of the champion's "
                f"training data (PSI {psi:.2f}, threshold {drift_threshold}): the customers "
                "changed, or a feed broke. Check the scoring report's drifted features; if "
                "the change is real, retrain with `python submit.py train`." + see,
                about=str(day),
            )
        )
    estimated = float(latest["estimated_roc_auc"])
    if estimated < promotion_floor:
        alerts.append(
            Alert(
                "performance",
                f"estimated ROC-AUC {estimated:.3f} on {day}",
                f"From the scores alone, the model's ROC-AUC on {day} is expected to be "
                f"{estimated:.3f}, under the promotion floor {promotion_floor}. Retrain with "
                "`python submit.py train`." + see,
                about=f"estimated {day}",
            )
        )
    closed = performance[performance["outcome_closed"].astype(bool)]
    if not closed.empty:
        last = closed.sort_values("as_of_date").iloc[-1]
        realized = float(last["roc_auc"])
        if realized < promotion_floor:
            alerts.append(
                Alert(
                    "performance",
                    f"realized ROC-AUC {realized:.3f} on {last['as_of_date']}",
                    f"Outcomes show the scores of {last['as_of_date']} ranked customers with "
                    f"ROC-AUC {realized:.3f} (95% interval {last['roc_auc_low']:.3f} to "
                    f"{last['roc_auc_high']:.3f}), under the promotion floor "
                    f"{promotion_floor}. Retrain with `python submit.py train`." + see,
                    about=f"realized {last['as_of_date']}",
                )
            )
    if high_tier_limit and int(latest["high"]) > high_tier_limit:
        alerts.append(
            Alert(
                "high_tier",
                f"{int(latest['high'])} high-risk customers on {day}",
                f"{int(latest['high'])} customers are in the `high` tier on {day}, more "
                f"than the limit of {high_tier_limit} the team can contact. Set a capacity "
                "(`high_risk_top_n`) or raise `high_tier_limit`." + see,
                about=str(day),
            )
        )
    return alerts


def retrain_due(performance: pd.DataFrame, *, floor: float, below: int, windows: int) -> bool:
    """Whether realized ROC-AUC is under `floor` in at least `below` of the last `windows`
    closed scoring dates (`below` 0: never)."""
    if not below:
        return False
    closed = performance[performance["outcome_closed"].astype(bool)].sort_values("as_of_date")
    recent = closed["roc_auc"].astype(float).tail(windows)
    return int((recent < floor).sum()) >= below


def digest(
    *, day: date, high: int, entered: list[str], control: int, link: str, with_ids: bool
) -> Alert:
    """The retention team's daily digest: how many customers are in the `high` tier on
    `day`, which `entered` it since the previous scoring date, how many of them are in
    the control group, and a link to the day's rows. Customer ids only `with_ids` (the
    `digest_customer_ids` setting)."""
    lines = [
        f"{high} customers are in the high churn-risk tier on {day}; "
        f"{len(entered)} of them entered it since the previous scores.",
        f"Today's rows: {link}",
    ]
    if control:
        lines.append(f"{control} of them are in the control group: leave them out of the offers.")
    if with_ids and entered:
        lines.append("Entered the high tier: " + ", ".join(entered))
    return Alert(
        "digest", f"{len(entered)} customers entered the high churn-risk tier on {day}",
        "\n".join(lines), about=str(day),
    )  # fmt: skip


def failed_run(pipeline: str, run_id: str, error: str, step: str | None) -> Alert:
    """A failed run's alert (local runs; on Vertex AI the exit handler e-mails)."""
    where = f" at step {step}" if step else ""
    return Alert(
        "failed_run",
        f"{pipeline} run {run_id} failed",
        f"The {pipeline} run {run_id} failed{where}: {error}\n"
        f"See `python submit.py runs` for its log.",
        about=run_id,
    )


def webhook_payload(alert: Alert, webhook_format: str) -> dict:
    """The JSON body of a chat message: Slack's incoming webhooks and Google Chat's space
    webhooks both take a `text` message (each with its own markup: `*bold*` in both)."""
    if webhook_format not in ("slack", "google_chat"):
        raise AlertError(
            f"alert_webhook_format must be slack or google_chat, got {webhook_format!r}"
        )
    return {"text": f"*{alert.subject}*\n{alert.text}"}


def post_webhook(alert: Alert, url: str, webhook_format: str) -> None:
    """POST the alert to a chat webhook; a refusal raises `AlertError` with the service's
    own answer."""
    body = json.dumps(webhook_payload(alert, webhook_format)).encode()
    content_type = (
        "application/json; charset=UTF-8" if webhook_format == "google_chat" else "application/json"
    )
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode(errors="replace")[:200]
        raise AlertError(
            f"the {webhook_format} webhook refused the alert: HTTP {exc.code} {answer}; "
            "check alert_webhook"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise AlertError(f"the alert webhook cannot be reached: {one_line(exc)}") from None


def send_email(alert: Alert, channels: Channels) -> None:
    """Send the alert by SMTP to every recipient; the password (when `smtp_user` is set)
    comes from the CHURN_SMTP_PASSWORD environment variable."""
    message = EmailMessage()
    message["Subject"] = f"[churn] {alert.subject}"
    message["From"] = channels.email_from
    message["To"] = ", ".join(channels.recipients)
    message.set_content(alert.text)
    try:
        if channels.smtp_security == "tls":
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                channels.smtp_host, channels.smtp_port, timeout=_TIMEOUT,
                context=ssl.create_default_context(),
            )  # fmt: skip
        else:
            server = smtplib.SMTP(channels.smtp_host, channels.smtp_port, timeout=_TIMEOUT)
        with server:
            if channels.smtp_security == "starttls":
                server.starttls(context=ssl.create_default_context())
            if channels.smtp_user:
                password = os.environ.get(PASSWORD_VARIABLE)
                if password is None:
                    raise AlertError(
                        f"smtp_user is set but {PASSWORD_VARIABLE} is not: export the SMTP "
                        "password in it"
                    )
                server.login(channels.smtp_user, password)
            server.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise AlertError(
            f"the alert e-mail could not be sent through {channels.smtp_host}:"
            f"{channels.smtp_port}: {one_line(exc)}; check smtp_host, smtp_port and "
            "smtp_security"
        ) from None


def deliver(
    alerts: Iterable[Alert], channels: Channels, *, already_sent: Iterable[str] = ()
) -> list[Alert]:
    """Send each alert whose key is not in `already_sent` (today's) through every
    configured channel; return those sent. A channel that fails is logged and the others
    still get the alert; when every configured channel failed for an alert, `AlertError`."""
    done = set(already_sent)
    sent = []
    for alert in alerts:
        if alert.key in done:
            log.info("already sent today: %s", alert.key)
            continue
        errors = []
        for channel in channels.configured:
            try:
                if channel == "email":
                    send_email(alert, channels)
                else:
                    post_webhook(alert, channels.webhook, channels.webhook_format)
            except AlertError as exc:
                log.error("%s", exc)
                errors.append(str(exc))
        if channels.configured and len(errors) == len(channels.configured):
            raise AlertError(errors[0])
        if not channels.configured:
            log.warning("no alert channel configured (smtp_host and alert_email_to, or "
                        "alert_webhook): %s", alert.key)  # fmt: skip
            continue
        done.add(alert.key)
        sent.append(alert)
    return sent
