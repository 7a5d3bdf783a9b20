"""Security headers on every response (pure ASGI, so streaming and errors are covered too)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The API answers JSON and iCal only: nothing in it may run scripts, load resources or be framed.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"


# Swagger UI (/docs) and ReDoc (/redoc): their files come from this origin only (app/openapi.py
# serves them). Each page sets its own policy, naming its inline script and style by digest;
# this one, without any, covers the rest under /docs (the assets, a 404).
def docs_policy(
    *, scripts: Sequence[str] = (), styles: Sequence[str] = (), redoc: bool = False
) -> str:
    """`scripts` and `styles`: digests ('sha256-…') of the page's inline ones, the only inline
    code allowed. `redoc`: what ReDoc needs besides, its styles made in the browser
    (styled-components: any inline style) and its search worker (started from a blob: URL)."""
    script = " ".join(("'self'", *scripts))
    style = "'self' 'unsafe-inline'" if redoc else " ".join(("'self'", *styles))
    worker = " worker-src blob:;" if redoc else ""
    return (
        f"default-src 'none'; script-src {script}; style-src {style}; img-src 'self' data:; "
        f"connect-src 'self';{worker} base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


DOCS_POLICY = docs_policy()
DOCS = ("/docs", "/redoc")
# The console: its own scripts, styles and SVG only; no inline script or style, forms post to
# itself only, and nothing frames it.
CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
CONSOLE = "/ui"
# The pages of a page email's one-click links: the console's style sheet, no script at all, a
# form that posts to this origin only, and nothing frames them.
ACTIONS_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
ACTIONS = "/v1/actions/"
CONSOLE_STATIC = "/ui/static/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        docs = path.startswith(DOCS)
        if docs:
            policy = DOCS_POLICY
        elif path == CONSOLE or path.startswith(CONSOLE + "/"):
            policy = CONSOLE_POLICY
        elif path.startswith(ACTIONS):
            policy = ACTIONS_POLICY
        else:
            policy = API_POLICY
        # The console's scripts and styles are named by a digest of their content (?v=): a day.
        static = path.startswith(CONSOLE_STATIC)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
                headers.setdefault("Content-Security-Policy", policy)
                if not docs:
                    found = static and message["status"] in (200, 304)
                    headers.setdefault(
                        "Cache-Control", "public, max-age=86400" if found else "no-store"
                    )
                if self.https:
                    headers.setdefault(
                        "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)
