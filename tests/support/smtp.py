"""A real SMTP server on loopback (aiosmtpd) that keeps every mail it receives."""

from __future__ import annotations

import threading
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from tests.support.ports import free_port
from tests.support.waiting import poll


class SMTPInbox:
    """aiosmtpd on 127.0.0.1. Its port is chosen when it is made, so that the service can be
    pointed at it before it listens (`start`); `stop` may be followed by another `start`.

    `messages[i]` arrived for the envelope recipients `recipients[i]`. Addresses in `refuse` are
    answered 550 (no such mailbox), those in `greylist` 450 (try again later).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []  # the envelope's RCPT TO of each message
        self.refuse: set[str] = set()
        self.greylist: set[str] = set()
        self._lock = threading.Lock()
        self._controller: Any = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, options: object
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such mailbox"
        if address in self.greylist:
            return "450 4.2.0 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        message = message_from_bytes(raw, policy=policy.default)
        with self._lock:
            self.messages.append(message)
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        controller = Controller(self, hostname="127.0.0.1", port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening, waiting at most 5 s (aiosmtpd's own stop joins without a limit)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            stopper = threading.Thread(target=controller.stop, daemon=True)
            stopper.start()
            stopper.join(timeout=5)

    def find(self, predicate: Callable[[EmailMessage, list[str]], bool]) -> EmailMessage | None:
        """The first mail so far for which `predicate(mail, its recipients)` holds."""
        with self._lock:
            received = list(zip(self.messages, self.recipients, strict=True))
        for message, recipients in received:
            if predicate(message, recipients):
                return message
        return None

    def wait_for(
        self,
        what: str,
        predicate: Callable[[EmailMessage, list[str]], bool],
        *,
        timeout: float = 20.0,
    ) -> EmailMessage:
        return poll(f"a mail: {what}", lambda: self.find(predicate), timeout=timeout)
