"""uvicorn's server, told when a stop signal arrives so that long-lived answers end then.

uvicorn waits for open connections to finish before it runs the app's shutdown, and a page's
event stream (the console's live updates) would not finish by itself for up to a minute: every
stop (Ctrl-C, a deploy, a gunicorn restart) would wait out the graceful timeout and then cancel
it. Both `incident-management serve` and the gunicorn worker (app/gunicorn_conf.py) run this
server; whatever holds such answers registers a hook with `on_exit_signal`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType

import uvicorn

_HOOKS: list[Callable[[], None]] = []


def on_exit_signal(hook: Callable[[], None]) -> None:
    """Call `hook` (from the signal handler, so it must be quick) when a stop signal arrives."""
    if hook not in _HOOKS:
        _HOOKS.append(hook)


class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for hook in _HOOKS:
            hook()
        super().handle_exit(sig, frame)
