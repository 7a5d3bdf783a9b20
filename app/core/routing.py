"""Both `/path/` and `/path` reach every endpoint, without a redirect (clients POST to either);
a 405 names every method the path has in `Allow`."""

from __future__ import annotations

from fastapi.routing import iter_route_contexts
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")

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
            send = self._allow_every_method(scope, send)
        await self.app(scope, receive, send)

    def _allow_every_method(self, scope: Scope, send: Send) -> Send:
        """FastAPI makes one route per method, and its 405 lists only the first route's methods
        in `Allow`; RFC 9110 wants all of the path's methods there."""

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = ", ".join(self._methods_of(scope))
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allowed.encode())]}
            await send(message)

        return send_with_allow

    def _alternative(self, scope: Scope) -> str | None:
        """The other spelling of an unknown path, when that one is known."""
        if self._matches(scope):
            return None
        path: str = scope["path"]
        alternative = path[:-1] if path.endswith("/") else path + "/"
        candidate = {**scope, "path": alternative, "raw_path": alternative.encode()}
        return alternative if self._matches(candidate) else None

    def _methods_of(self, scope: Scope) -> list[str]:
        """The methods of the path template that the request's path matched first (so that
        `/v1/users/me` does not borrow DELETE from `/v1/users/{user_id}`)."""
        contexts = list(iter_route_contexts(self.router.routes))
        template = next(
            (c.path_format for c in contexts if c.matches(scope)[0] is not Match.NONE), None
        )
        found = {m for c in contexts if c.path_format == template for m in c.methods or ()}
        return [m for m in METHODS if m in found]

    def _matches(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.router.routes)
