"""uvicorn's server, told when a stop signal arrives so that the console's live streams end then.

uvicorn waits for open connections to finish before it runs the app's shutdown, and a page's
event stream would not finish by itself for up to a minute: every stop (Ctrl-C, a deploy, a
gunicorn restart) would wait out the graceful timeout and then cancel it. Both `incident-management
serve` and the gunicorn worker (app/gunicorn_conf.py) run this server.
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from app.ui import live


class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        live.on_exit_signal()
        super().handle_exit(sig, frame)
