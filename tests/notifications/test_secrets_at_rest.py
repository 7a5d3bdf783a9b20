"""Webhook signing secrets are stored encrypted under a key derived from SECRET_KEY
(app.core.crypto); deliveries are signed with the secret itself, and a changed SECRET_KEY reads
the old ones through PREVIOUS_SECRET_KEYS."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from app.core.crypto import Sealer, Unreadable
from app.core.db import session_scope
from app.main import create_app
from app.migrations import seal_stored_secrets
from app.notifications.models import Notification, WebhookSubscription
from tests.support.receivers import verify
from tests.support.settings import TEST_SECRET, make_settings

NEW_KEY = "a-new-secret-key-for-the-rotation-test-0123456789abcdefghijklmnop"


@pytest.fixture
def settings(database_url):
    return make_settings(database_url, outbound_allow_private_networks=True)


async def subscribe(admin_client, http_receiver) -> dict:
    created = await admin_client.post(
        "/v1/webhooks/",
        json={"name": "status page", "url": f"{http_receiver.url}/in", "events": ["triggered"]},
    )
    assert created.status_code == 201, created.text
    return created.json()


async def stored(harness, hook_id: int) -> str:
    async with session_scope(harness.app.state.sessionmaker) as session:
        return (await session.get(WebhookSubscription, hook_id)).secret


async def deliveries(harness) -> list[Notification]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(await session.scalars(select(Notification).order_by(Notification.id)))


async def ping(admin_client, hook_id: int) -> None:
    assert (await admin_client.post(f"/v1/webhooks/{hook_id}/test")).status_code == 202


async def test_the_database_holds_only_ciphertext_and_receivers_verify_the_secret(
    admin_client, harness, http_receiver
):
    hook = await subscribe(admin_client, http_receiver)
    secret = hook["secret"]
    kept = await stored(harness, hook["id"])
    assert kept.startswith("fernet:") and secret not in kept and secret[6:20] not in kept
    assert Sealer(TEST_SECRET).open(kept) == secret
    await ping(admin_client, hook["id"])
    await harness.run_jobs()
    [request] = http_receiver.requests
    assert verify(secret, request)["event"] == "ping"
    rotated = (await admin_client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")).json()
    assert Sealer(TEST_SECRET).open(await stored(harness, hook["id"])) == rotated["secret"]
    assert rotated["secret_prefix"] == rotated["secret"][:10] != hook["secret_prefix"]


async def run_worker_with(harness, **overrides) -> None:
    """One worker pass of another process whose settings differ (a restart with a new key)."""
    other = create_app(harness.settings.model_copy(update=overrides), clock=harness.clock)
    async with other.router.lifespan_context(other):
        await other.state.worker.run_once()


async def test_a_new_secret_key_reads_the_old_secrets_through_previous_secret_keys(
    admin_client, harness, http_receiver
):
    hook = await subscribe(admin_client, http_receiver)
    await ping(admin_client, hook["id"])
    await run_worker_with(harness, secret_key=NEW_KEY, previous_secret_keys=f" {TEST_SECRET} ,")
    [request] = http_receiver.requests
    assert verify(hook["secret"], request)["event"] == "ping"


async def test_without_the_old_key_the_delivery_waits_saying_why_until_the_key_is_given(
    admin_client, harness, http_receiver
):
    hook = await subscribe(admin_client, http_receiver)
    await ping(admin_client, hook["id"])
    await run_worker_with(harness, secret_key=NEW_KEY)
    assert http_receiver.requests == []
    [row] = await deliveries(harness)
    assert (row.status, row.attempts) == ("pending", 1)  # retried like a failed send
    assert "PREVIOUS_SECRET_KEYS" in row.last_error
    with pytest.raises(Unreadable):
        Sealer(NEW_KEY).open(await stored(harness, hook["id"]))
    harness.clock.advance(minutes=5)  # past the first retry's wait
    await run_worker_with(harness, secret_key=NEW_KEY, previous_secret_keys=TEST_SECRET)
    [request] = http_receiver.requests
    assert verify(hook["secret"], request)["event"] == "ping"


async def test_migrate_moves_secrets_to_the_new_key_so_the_old_one_can_go(
    admin_client, harness, http_receiver
):
    hook = await subscribe(admin_client, http_receiver)
    rotated = harness.settings.model_copy(
        update={"secret_key": NEW_KEY, "previous_secret_keys": TEST_SECRET}
    )
    assert await seal_stored_secrets(rotated) == 1
    assert await seal_stored_secrets(rotated) == 0
    assert Sealer(NEW_KEY).open(await stored(harness, hook["id"])) == hook["secret"]


async def test_secrets_stored_in_plain_text_before_still_sign_and_migrate_encrypts_them(
    admin_client, harness, http_receiver
):
    hook = await subscribe(admin_client, http_receiver)
    async with session_scope(harness.app.state.sessionmaker) as session:
        await session.execute(
            update(WebhookSubscription).values(secret=hook["secret"])  # as an older version did
        )
    await ping(admin_client, hook["id"])
    await harness.run_jobs()
    assert verify(hook["secret"], http_receiver.requests[0])["event"] == "ping"
    assert await seal_stored_secrets(harness.settings) == 1
    assert await seal_stored_secrets(harness.settings) == 0
    assert Sealer(TEST_SECRET).open(await stored(harness, hook["id"])) == hook["secret"]


def test_sealing_twice_gives_different_ciphertexts_of_one_secret():
    sealer = Sealer(TEST_SECRET)
    one, two = sealer.seal("whsec_x"), sealer.seal("whsec_x")
    assert one != two and sealer.open(one) == sealer.open(two) == "whsec_x"
    assert Sealer(NEW_KEY, [TEST_SECRET]).open(one) == "whsec_x"
    with pytest.raises(Unreadable):  # the right key, a changed ciphertext
        sealer.open(one[:-4] + ("AAAA" if not one.endswith("AAAA") else "BBBB"))
