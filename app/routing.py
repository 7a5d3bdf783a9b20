"""Both `/path/` and `/path` reach every endpoint, without a redirect (clients POST to either)."""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

# Paths already looked up (matching every route costs more than the request's own routing);
# emptied when full, as paths with ids in them are many.
CACHE_SIZE = 4096


class SlashAliasMiddleware:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router
        self._alias: dict[tuple[str, str], str | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/":
            key = (scope["method"], scope["path"])
            if key not in self._alias:
                if len(self._alias) >= CACHE_SIZE:
                    self._alias.clear()
                self._alias[key] = self._alternative(scope)
            alternative = self._alias[key]
            if alternative is not None:
                scope = {**scope, "path": alternative, "raw_path": alternative.encode()}
        await self.app(scope, receive, send)

    def _alternative(self, scope: Scope) -> str | None:
        """The other spelling of an unknown path, when that one is known."""
        if self._matches(scope):
            return None
        path: str = scope["path"]
        alternative = path[:-1] if path.endswith("/") else path + "/"
        candidate = {**scope, "path": alternative, "raw_path": alternative.encode()}
        return alternative if self._matches(candidate) else None

    def _matches(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.router.routes)
