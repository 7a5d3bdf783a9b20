"""A fake Slack Web API on loopback, and Slack's side of the requests it sends us.

`FakeSlack` answers `chat.postMessage`, `chat.update`, `chat.postEphemeral`, `users.info` and
`users.lookupByEmail` as Slack documents them: the bot token as `Authorization: Bearer xoxb-…`
(else `not_authed` / `invalid_auth`), each method's required arguments checked (arguments may come
as a query string, a form or JSON, as Slack accepts them), and `{"ok": true, …}` with a `ts`, or
`{"ok": false, "error": "…"}`. A message posted to a member id opens a direct message: Slack
answers with the conversation's `D…` id, and `chat.update` must name that conversation. Every
call is recorded in `calls` for assertions; `script` holds errors to answer next.

`signed` signs a request body as Slack does (v0, HMAC-SHA256 of `v0:<timestamp>:<body>` with the
signing secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.ports import free_port

TOKEN = "xoxb-test-0123456789-abcdefghij"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

# Each method's required arguments (a tuple: at least one of them).
REQUIRED: dict[str, list[str | tuple[str, ...]]] = {
    "chat.postMessage": ["channel", ("text", "blocks", "attachments")],
    "chat.update": ["channel", "ts"],
    "chat.postEphemeral": ["channel", "user", ("text", "blocks", "attachments")],
    "users.info": ["user"],
    "users.lookupByEmail": ["email"],
}


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Member:
    id: str
    email: str | None
    name: str = "member"


@dataclass
class FakeSlack:
    token: str = TOKEN
    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    members: dict[str, Member] = field(default_factory=dict)
    # (conversation, ts) → the message as last posted or updated.
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Errors to answer next, whatever is called: (HTTP status, Slack's error, Retry-After).
    script: list[tuple[int, str, str | None]] = field(default_factory=list)
    delay: float = 0.0  # seconds before each answer: keeps a call in flight
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _ts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def member(self, member_id: str, email: str | None, name: str = "member") -> Member:
        self.members[member_id] = Member(member_id, email, name)
        return self.members[member_id]

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # ---- the methods ----------------------------------------------------------------------------

    def answer(self, method: str, args: dict[str, Any], headers: dict[str, str]) -> tuple[
        int, dict[str, Any], dict[str, str]
    ]:  # fmt: skip
        with self._lock:
            self.calls.append(Call(method, args, headers))
            authorization = headers.get("authorization", "")
            if not authorization.startswith("Bearer "):
                return 200, {"ok": False, "error": "not_authed"}, {}
            if authorization.removeprefix("Bearer ") != self.token:
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            if self.script:
                status, error, retry_after = self.script.pop(0)
                extra = {"Retry-After": retry_after} if retry_after else {}
                return status, {"ok": False, "error": error}, extra
            if method not in REQUIRED:
                return 200, {"ok": False, "error": "unknown_method"}, {}
            for required in REQUIRED[method]:
                names = required if isinstance(required, tuple) else (required,)
                if not any(args.get(name) for name in names):
                    error = "no_text" if "text" in names else "invalid_arguments"
                    return 200, {"ok": False, "error": error, "missing": list(names)}, {}
            handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(
                self, "_" + method.replace(".", "_")
            )
            return 200, handler(args), {}

    def _conversation(self, channel: str) -> str | None:
        """The conversation a channel argument names: a channel, or a member's direct message."""
        if channel[:1] in "CGD" and channel[1:].isalnum() and channel.isupper():
            return channel
        if channel[:1] in "UW" and channel in self.members:
            return "D" + channel[1:]
        return None

    def _next_ts(self) -> str:
        self._ts += 1
        return f"1765130000.{self._ts:06d}"

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        conversation = self._conversation(str(args["channel"]))
        if conversation is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = self._next_ts()
        message = {"text": args.get("text"), "blocks": _blocks(args.get("blocks")), "ts": ts}
        self.messages[(conversation, ts)] = message
        return {"ok": True, "channel": conversation, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (str(args["channel"]), str(args["ts"]))
        if self._conversation(key[0]) is None:
            return {"ok": False, "error": "channel_not_found"}
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        message = {"text": args.get("text"), "blocks": _blocks(args.get("blocks")), "ts": key[1]}
        self.messages[key] = message
        return {"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text")}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if self._conversation(str(args["channel"])) is None:
            return {"ok": False, "error": "channel_not_found"}
        if args["user"] not in self.members:
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        member = self.members.get(str(args["user"]))
        if member is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": _user(member)}

    def _users_lookupByEmail(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args["email"]).lower()
        for member in self.members.values():
            if (member.email or "").lower() == email:
                return {"ok": True, "user": _user(member)}
        return {"ok": False, "error": "users_not_found"}

    # ---- the server -----------------------------------------------------------------------------

    def __enter__(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not parts.path.startswith("/api/"):
                    self.send_error(404)
                    return
                args: dict[str, Any] = {k: v[0] for k, v in parse_qs(parts.query).items()}
                kind = headers.get("content-type", "").split(";")[0].strip()
                if body and kind == "application/json":
                    args.update(json.loads(body))
                elif body:
                    args.update({k: v[0] for k, v in parse_qs(body.decode()).items()})
                status, answer, extra = fake.answer(parts.path[len("/api/") :], args, headers)
                time.sleep(fake.delay)
                content = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(content)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _blocks(value: Any) -> list[dict[str, Any]]:
    """Blocks as sent: JSON in a JSON body, or a JSON string in a form."""
    if isinstance(value, str):
        loaded: list[dict[str, Any]] = json.loads(value)
        return loaded
    return list(value or [])


def _user(member: Member) -> dict[str, Any]:
    profile: dict[str, Any] = {"real_name": member.name, "display_name": member.name}
    if member.email is not None:
        profile["email"] = member.email
    return {"id": member.id, "name": member.name, "deleted": False, "is_bot": False,
            "profile": profile}  # fmt: skip


# ---- Slack's side of our inbound endpoints -------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed(body: bytes, *, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """The headers Slack sends with `body`, signed at `timestamp` (seconds since the epoch)."""
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": signature(secret, str(timestamp), body),
    }


def buttons(blocks: list[dict[str, Any]]) -> list[str]:
    """The action ids of a message's buttons."""
    return [
        element["action_id"]
        for block in blocks
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


def block_text(blocks: list[dict[str, Any]]) -> str:
    """All the text of a message's blocks, to look for words in."""
    return json.dumps(blocks)
