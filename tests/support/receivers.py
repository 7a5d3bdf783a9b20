"""A real HTTP server on loopback that records every request: the webhook, Slack and Twilio
peers of the service, and what a receiver does with a signed delivery."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypedDict

from tests.support.ports import free_port
from tests.support.waiting import poll


class Received(TypedDict):
    """One request as it arrived (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival


class HTTPReceiver:
    """A ThreadingHTTPServer on 127.0.0.1 that records every GET, POST and PUT in `requests`.

    Its port is chosen when it is made, so that the service can be pointed at it before it
    listens (`start`). It answers `status` with body `b"ok"` after `delay` seconds, or, while
    `script` holds answers, the next of them: `(status, body, delay_seconds)`.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Received] = []
        self.status = 200
        self.delay = 0.0  # seconds: a slow receiver keeps deliveries in flight
        self.script: list[tuple[int, bytes, float]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def _answer(self, request: Received) -> tuple[int, bytes, float]:
        with self._lock:
            self.requests.append(request)
            return self.script.pop(0) if self.script else (self.status, b"ok", self.delay)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = Received(
                    method=self.command, path=self.path, headers=headers, body=body, at=time.time()
                )
                status, content, delay = receiver._answer(request)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the client gave up waiting

            do_GET = do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256  # the default (5) resets bursts of concurrent deliveries

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def find(self, predicate: Callable[[Received], bool]) -> Received | None:
        """The first request so far for which `predicate` holds."""
        with self._lock:
            received = list(self.requests)
        for request in received:
            if predicate(request):
                return request
        return None

    def wait_for(
        self, what: str, predicate: Callable[[Received], bool], *, timeout: float = 20.0
    ) -> Received:
        return poll(f"a webhook delivery: {what}", lambda: self.find(predicate), timeout=timeout)


# ---- signed deliveries ---------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """As `sign()` in app/notifications/channels.py: sha256=<hex HMAC-SHA256(secret, ts.body)>."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def signed_with(request: Mapping[str, Any], secret: str) -> bool:
    """Does the request's X-Signature verify with `secret`, as a receiver checks it?"""
    headers = {name.lower(): value for name, value in request["headers"].items()}
    expected = signature(secret, headers.get("x-timestamp", ""), request["body"])
    return hmac.compare_digest(headers.get("x-signature", ""), expected)


def verify(secret: str, request: Mapping[str, Any]) -> Any:
    """What a receiver does: check the signature over timestamp + "." + body, then parse."""
    assert signed_with(request, secret), "X-Signature does not verify with the secret"
    return json.loads(request["body"])


# ---- a TLS peer that only listens ---------------------------------------------------------------


# What a Microsoft Teams Workflows webhook ("When a Teams webhook request is received") takes: a
# `message` whose attachments are Adaptive Cards (the connectors' MessageCard is not accepted).
# The elements and actions the service sends are checked against the Adaptive Card schema's
# required properties.
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_ELEMENTS = {"TextBlock": {"text"}, "FactSet": {"facts"}}
CARD_ACTIONS = {"Action.OpenUrl": {"url"}}


def teams_card(request: Mapping[str, Any]) -> dict[str, Any]:
    """The Adaptive Card of a request to a Teams Workflows webhook, once the request is checked
    as a Workflow would take it: a JSON POST, `{"type": "message", "attachments": [...]}`, one
    Adaptive Card attachment with `contentUrl` null, and a card of version 1.0-1.5 (what Teams
    renders) made only of elements and actions that carry the properties the schema requires."""
    assert request["method"] == "POST", request["method"]
    assert request["headers"].get("content-type", "").startswith("application/json")
    message = json.loads(request["body"])
    assert set(message) == {"type", "attachments"} and message["type"] == "message", message
    [attachment] = message["attachments"]
    assert attachment["contentType"] == ADAPTIVE_CARD, attachment
    assert "contentUrl" in attachment and attachment["contentUrl"] is None
    card: dict[str, Any] = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["version"] in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5"), card["version"]
    for element in card["body"]:
        assert CARD_ELEMENTS[element["type"]] <= set(element), element
        for fact in element.get("facts", []):
            assert set(fact) == {"title", "value"} and all(
                isinstance(v, str) for v in fact.values()
            )
    for action in card.get("actions", []):
        assert CARD_ACTIONS[action["type"]] <= set(action), action
        assert action["url"].startswith(("https://", "http://")), action
    return card


class TLSListener:
    """A TCP listener on 127.0.0.1 that records, for each connection, the server name a TLS client
    asked for (SNI, read from its ClientHello, RFC 8446 4.1.2 and RFC 6066 3), then hangs up.
    `connections` counts every connection, TLS or not: a port that must never be reached."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.server_names: list[str | None] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TLSListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            header = await asyncio.wait_for(reader.readexactly(5), 5)
            record = await asyncio.wait_for(reader.readexactly(int.from_bytes(header[3:5])), 5)
            self.server_names.append(server_name(record) if header[0] == 22 else None)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            self.server_names.append(None)
        finally:
            writer.close()


def server_name(handshake: bytes) -> str | None:
    """The host_name of the server_name extension of a ClientHello handshake message, or None."""
    if not handshake or handshake[0] != 1:  # not a ClientHello
        return None
    at = 4 + 2 + 32  # handshake header, legacy_version, random
    at += 1 + handshake[at]  # legacy_session_id
    at += 2 + int.from_bytes(handshake[at : at + 2])  # cipher_suites
    at += 1 + handshake[at]  # legacy_compression_methods
    end = at + 2 + int.from_bytes(handshake[at : at + 2])
    at += 2
    while at + 4 <= end:
        kind = int.from_bytes(handshake[at : at + 2])
        length = int.from_bytes(handshake[at + 2 : at + 4])
        data = handshake[at + 4 : at + 4 + length]
        if kind == 0:  # server_name: list length, name_type (0: host_name), name length, name
            return data[5 : 5 + int.from_bytes(data[3:5])].decode("ascii")
        at += 4 + length
    return None
