"""Real receivers of alerts on 127.0.0.1: an SMTP server (aiosmtpd) and a chat webhook
that answers as Slack's incoming webhooks do on their path, and as a Google Chat space
webhook (`/v1/spaces/SPACE/messages?key=...&token=...`) does on its own."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from aiosmtpd.controller import Controller

WEBHOOK_PATH = "/services/T000/B000/XXXX"
CHAT_PATH = "/v1/spaces/AAAA/messages?key=KEY&token=TOKEN"


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
        if self.path.startswith("/v1/spaces/"):
            return self._google_chat(body)
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

    def _google_chat(self, body: bytes) -> None:
        """As Google Chat's spaces.messages.create behind a webhook URL: the key and token
        in the query, a JSON `Message` with text; the created message back, or a Google
        API error."""
        path, _, query = self.path.partition("?")
        if "key=" not in query or "token=" not in query:
            return self._error(403, "PERMISSION_DENIED", "The request is missing a valid API key.")
        try:
            message = json.loads(body)
        except ValueError:
            return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(message, dict) or not str(message.get("text", "")).strip():
            return self._error(400, "INVALID_ARGUMENT", "Message cannot be empty.")
        self.received.append(message)
        space = path.removeprefix("/v1/").removesuffix("/messages")
        created = {
            "name": f"{space}/messages/m1",
            "text": message["text"],
            "space": {"name": space},
        }
        return self._answer(200, json.dumps(created), "application/json; charset=UTF-8")

    def _error(self, code: int, status: str, message: str) -> None:
        error = {"error": {"code": code, "message": message, "status": status}}
        self._answer(code, json.dumps(error), "application/json; charset=UTF-8")

    def _answer(self, code: int, text: str, content_type: str = "text/html") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
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
