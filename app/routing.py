"""Both `/path/` and `/path` reach every endpoint, without a redirect (clients POST to either)."""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send


class SlashAliasMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/" and not self._matches(scope):
            path: str = scope["path"]
            alternative = path[:-1] if path.endswith("/") else path + "/"
            candidate = {**scope, "path": alternative, "raw_path": alternative.encode()}
            if self._matches(candidate):
                scope = candidate
        await self.app(scope, receive, send)

    def _matches(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.router.routes)
