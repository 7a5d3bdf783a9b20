"""Who did something: a person, an API key acting for one, an integration (an alert source), or
the system itself.

Every record of a change names its actor: incident timelines, schedule histories, webhook
payloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class Person(Protocol):
    id: int
    full_name: str


@dataclass(frozen=True, slots=True)
class Actor:
    type: Literal["user", "integration", "system", "api_key"]
    id: int | None
    name: str
    # The way a person acted when not through the API or the console: "sms", "voice", "email",
    # "slack"; recorded in the timeline entry's data as `via`.
    via: str | None = None
    # An API key's user (its owner, or an organisation key's service account): `id` is the key's.
    key_user_id: int | None = None

    @classmethod
    def of(cls, user: Person, *, via: str | None = None) -> Actor:
        return cls("user", user.id, user.full_name, via)

    @classmethod
    def of_key(cls, key_id: int, prefix: str, user: Person) -> Actor:
        """A request authenticated by an API key: the key acts, for its user."""
        return cls("api_key", key_id, f"{user.full_name} (API key {prefix})", key_user_id=user.id)

    @property
    def user_id(self) -> int | None:
        """The person acting, directly or through an API key."""
        if self.type == "api_key":
            return self.key_user_id
        return self.id if self.type == "user" else None


SYSTEM = Actor("system", None, "system")
# The system, more precisely: the background worker's jobs, and the command line's commands.
WORKER = Actor("system", None, "worker")
CLI = Actor("system", None, "cli")
