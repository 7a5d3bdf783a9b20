"""A local Twilio on 127.0.0.1: the Messages and Calls endpoints of its REST API, checked as
Twilio documents them, and Twilio's side of the webhooks (signed exactly as Twilio signs them).

REST (what the service calls, through Twilio's SDK pointed at `url`):

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` and `…/Calls.json`, form-encoded, with
  HTTP Basic auth (account SID : auth token; anything else: 401, Twilio's error 20003).
- Messages need `To` (E.164), `From` or `MessagingServiceSid`, and `Body` (at most 1600
  characters); Calls need `To`, `From`, and `Url` (or `Twiml`); `StatusCallback` and `Url` must
  be http(s) URLs; `StatusCallbackEvent` only initiated, ringing, answered, completed. Bad input is
  a 400 with Twilio's error JSON (`code`, `message`, `more_info`, `status`); a number in
  `opted_out` gets error 21610, as a number that texted STOP does.
- Accepted: 201 with the resource's JSON (`sid` `SM…` or `CA…`, `status` `queued`); the request is
  kept in `messages` or `calls` (its fields, first value each, `StatusCallbackEvent` as a list).
  `script` holds answers to give first instead: `(status, Twilio error code, message)`.

Webhooks (what Twilio sends the service): `message_status`, `call_status`, `answer_call`,
`press`, `inbound_sms` POST the documented form fields to the service (an httpx client, in the
test's process or over HTTP) at the URL Twilio would call, signed with `RequestValidator` of the
twilio package over that full URL and the POST parameters (`signature`).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import httpx
from twilio.request_validator import RequestValidator

from tests.support.ports import free_port

ACCOUNT_SID = "AC" + "5e" * 16
AUTH_TOKEN = "fake-twilio-auth-token-0123456789"
API = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/(?P<kind>Messages|Calls)\.json")
E164 = re.compile(r"\+[1-9]\d{1,14}")
CALL_EVENTS = {"initiated", "ringing", "answered", "completed"}


def signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """`X-Twilio-Signature` as Twilio computes it: HMAC-SHA1 of the full URL and the sorted POST
    parameters, base64."""
    signed: str = RequestValidator(auth_token).compute_signature(url, params)
    return signed


class TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> bytes:
        return json.dumps({
            "code": self.code, "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status,
        }).encode()  # fmt: skip


@dataclass
class FakeTwilio:
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    port: int = field(default_factory=free_port)
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # path, status, code
    opted_out: set[str] = field(default_factory=set)
    script: list[tuple[int, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- the REST API --------------------------------------------------------------------------

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        """(status, JSON body) for one request; records it."""
        try:
            return 201, self._accept(method, path, headers, body)
        except TwilioError as error:
            with self._lock:
                self.refused.append({"path": path, "status": error.status, "code": error.code})
            return error.status, error.body()

    def _accept(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        match = API.fullmatch(urlsplit(path).path)
        if match is None:
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        if method != "POST":
            raise TwilioError(405, 20004, "Method not allowed")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if headers.get("authorization") != f"Basic {expected}":
            raise TwilioError(401, 20003, "Authenticate")
        if match["account"] != self.account_sid:
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise TwilioError(400, 20001, "Expected a form-encoded body")
        fields = parse_qs(body.decode(), keep_blank_values=True)
        form: dict[str, Any] = {name: values[0] for name, values in fields.items()}
        with self._lock:
            if self.script:
                status, code, message = self.script.pop(0)
                raise TwilioError(status, code, message)
        to = form.get("To", "")
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not E164.fullmatch(to):
            raise TwilioError(400, 21211, f"Invalid 'To' Phone Number: {to}")
        for name in ("StatusCallback", "Url"):
            if name in form and urlsplit(form[name]).scheme not in ("http", "https"):
                raise TwilioError(400, 21609 if name == "StatusCallback" else 21205,
                                  f"Invalid {name}: {form[name]}")  # fmt: skip
        if match["kind"] == "Messages":
            return self._message(form)
        return self._call(form, fields)

    def _message(self, form: dict[str, Any]) -> bytes:
        if not (form.get("From") or form.get("MessagingServiceSid")):
            raise TwilioError(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body"):
            raise TwilioError(400, 21602, "Message body is required.")
        if len(form["Body"]) > 1600:
            raise TwilioError(400, 21617, "The concatenated message body exceeds the 1600 "
                              "character limit.")  # fmt: skip
        if form["To"] in self.opted_out:
            raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
        form["sid"] = "SM" + secrets.token_hex(16)
        with self._lock:
            self.messages.append(form)
        return self._resource(form, "Messages", body=form["Body"])

    def _call(self, form: dict[str, Any], fields: dict[str, list[str]]) -> bytes:
        if not form.get("From"):
            raise TwilioError(400, 21213, "No 'From' number is specified")
        if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
            raise TwilioError(400, 21205, "Url parameter is required.")
        events = fields.get("StatusCallbackEvent", [])
        if set(events) - CALL_EVENTS:
            raise TwilioError(400, 21626, f"Invalid StatusCallbackEvent: {events}")
        form["StatusCallbackEvent"] = events
        form["sid"] = "CA" + secrets.token_hex(16)
        with self._lock:
            self.calls.append(form)
        return self._resource(form, "Calls")

    def _resource(self, form: dict[str, Any], kind: str, **extra: Any) -> bytes:
        return json.dumps({
            "sid": form["sid"], "account_sid": self.account_sid, "to": form["To"],
            "from": form.get("From"), "status": "queued", "api_version": "2010-04-01",
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/{kind}/{form['sid']}.json",
            **extra,
        }).encode()  # fmt: skip

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, content = fake._handle(self.command, self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # ---- Twilio's webhooks ---------------------------------------------------------------------

    async def post_signed(
        self, client: httpx.AsyncClient, url: str, params: dict[str, str],
        *, auth_token: str | None = None, signed: str | None = None,
    ) -> httpx.Response:  # fmt: skip
        """POST `params` to the service as Twilio calls `url` (its full public URL): the path and
        query go to `client`, the signature covers the URL as given (`signed` replaces it)."""
        parts = urlsplit(url)
        header = signed if signed is not None else signature(
            auth_token or self.auth_token, url, params
        )  # fmt: skip
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return await client.post(
            path, data=params, headers={"X-Twilio-Signature": header} if header else {}
        )

    def _base(self, resource: dict[str, Any]) -> dict[str, str]:
        return {"AccountSid": self.account_sid, "From": resource.get("From") or "+15550001111",
                "To": resource["To"], "ApiVersion": "2010-04-01"}  # fmt: skip

    async def message_status(
        self, client: httpx.AsyncClient, message: dict[str, Any], status: str,
        error_code: str | None = None,
    ) -> httpx.Response:  # fmt: skip
        params = self._base(message) | {
            "MessageSid": message["sid"], "SmsSid": message["sid"], "MessageStatus": status,
            "SmsStatus": status,
        }  # fmt: skip
        if error_code:
            params["ErrorCode"] = error_code
        return await self.post_signed(client, message["StatusCallback"], params)

    async def call_status(
        self, client: httpx.AsyncClient, call: dict[str, Any], status: str,
        answered_by: str | None = None, sequence: int = 0,
    ) -> httpx.Response:  # fmt: skip
        params = self._base(call) | {
            "CallSid": call["sid"], "CallStatus": status, "Direction": "outbound-api",
            "CallbackSource": "call-progress-events", "SequenceNumber": str(sequence),
        }  # fmt: skip
        if status == "completed":
            params["CallDuration"] = "21"
        if answered_by:
            params["AnsweredBy"] = answered_by
        return await self.post_signed(client, call["StatusCallback"], params)

    async def answer_call(self, client: httpx.AsyncClient, call: dict[str, Any]) -> httpx.Response:
        """The callee picked up: Twilio fetches the call's TwiML from its `Url`."""
        params = self._base(call) | {"CallSid": call["sid"], "CallStatus": "in-progress",
                                     "Direction": "outbound-api"}  # fmt: skip
        return await self.post_signed(client, call["Url"], params)

    async def press(
        self, client: httpx.AsyncClient, call: dict[str, Any], twiml: str, digits: str
    ) -> httpx.Response:
        """The callee pressed `digits` (empty: the gather timed out and Twilio goes on with the
        TwiML after it, so nothing is posted and None is never answered: see `gather_of`)."""
        action, _ = gather_of(twiml)
        params = self._base(call) | {"CallSid": call["sid"], "CallStatus": "in-progress",
                                     "Direction": "outbound-api", "Digits": digits,
                                     "FinishedOnKey": ""}  # fmt: skip
        return await self.post_signed(client, action, params)

    async def inbound_sms(
        self, client: httpx.AsyncClient, url: str, *, sender: str, body: str,
        to: str = "+15550001111", **signing: Any,
    ) -> httpx.Response:  # fmt: skip
        params = {"MessageSid": "SM" + secrets.token_hex(16), "AccountSid": self.account_sid,
                  "From": sender, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
                  "SmsStatus": "received", "ApiVersion": "2010-04-01"}  # fmt: skip
        return await self.post_signed(client, url, params, **signing)


def gather_of(twiml: str) -> tuple[str, str]:
    """(the `<Gather>`'s action URL, what it says) of a TwiML answer; AssertionError without."""
    root = ElementTree.fromstring(twiml)  # noqa: S314 - the service's own answer
    gather = root.find("Gather")
    assert gather is not None, twiml
    assert gather.get("numDigits") == "1", twiml
    return gather.get("action") or "", " ".join(s.text or "" for s in gather.iter("Say"))


def said(twiml: str) -> str:
    """Everything a TwiML answer says or texts, in order."""
    root = ElementTree.fromstring(twiml)  # noqa: S314 - the service's own answer
    assert root.tag == "Response", twiml
    return " ".join(
        element.text or "" for element in root.iter() if element.tag in ("Say", "Message")
    )
