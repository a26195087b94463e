"""Real receivers of alerts on 127.0.0.1: an SMTP server (aiosmtpd) and a chat webhook
that answers as Slack's incoming webhooks do."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from aiosmtpd.controller import Controller

WEBHOOK_PATH = "/services/T000/B000/XXXX"


class Mailbox:
    """aiosmtpd handler: keeps every message the SMTP server accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode())
        )
        return "250 Message accepted for delivery"


class SlackWebhook(BaseHTTPRequestHandler):
    """Answers as Slack's incoming webhooks do: 200 `ok`; 400 `invalid_payload` for a
    body that is not JSON, 400 `no_text` for a message without text; 404 `no_service`
    for another path."""

    received: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != WEBHOOK_PATH:
            return self._answer(404, "no_service")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._answer(400, "invalid_payload")
        try:
            payload = json.loads(body)
        except ValueError:
            return self._answer(400, "invalid_payload")
        if not isinstance(payload, dict) or not str(payload.get("text", "")).strip():
            return self._answer(400, "no_text")
        self.received.append(payload)
        return self._answer(200, "ok")

    def _answer(self, code: int, text: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args) -> None:
        pass


def running():
    """Start both receivers; yield (mailbox, SMTP port, webhook port); stop them."""
    mailbox = Mailbox()
    with socket.socket() as probe:  # aiosmtpd's start-up check cannot use port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    SlackWebhook.received = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), SlackWebhook)
    threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield mailbox, port, http.server_address[1]
    finally:
        http.shutdown()
        smtp.stop()
