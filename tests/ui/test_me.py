"""My page (/ui/me): contact methods, proving their addresses, and notification rules, through
the console's forms, read back through the API (the same service functions behind both)."""

from __future__ import annotations

import html
import re

from sqlalchemy import func, select

from app.notifications.models import ContactMethod, ContactVerification, NotificationRule
from app.notifications.verification import code_for
from tests.support.delivery import delivery_log

METHODS = "/v1/users/me/contact-methods"
RULES = "/v1/users/me/notification-rules"
NUMBER = "+14155552671"


async def api_methods(client) -> list[dict]:
    return (await client.get(METHODS)).json()["items"]


async def api_rules(client) -> list[dict]:
    return (await client.get(RULES)).json()["items"]


async def counts(harness) -> tuple[int, int, int]:
    """Contact methods, rules and verification rows, of everyone."""
    async with harness.app.state.sessionmaker() as session:
        return tuple(  # type: ignore[return-value]
            [
                await session.scalar(select(func.count()).select_from(model))
                for model in (ContactMethod, NotificationRule, ContactVerification)
            ]
        )


def lines(page: str, attribute: str) -> list[str]:
    """The text of each `<li data-…>` of a list, tags dropped, spaces squeezed."""
    found = re.findall(rf'<li[^>]* {attribute}="\d+"[^>]*>(.*?)</li>', page, flags=re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", item)).split()) for item in found]


def field_error(page: str, field_id: str) -> str:
    """The error shown beside a field, checked to be tied to it (aria-describedby)."""
    control = re.search(rf'<(?:input|select)[^>]* id="{field_id}"[^>]*>', page)
    assert control, f"no field {field_id}"
    assert 'aria-invalid="true"' in control.group(0), control.group(0)
    described = re.search(r'aria-describedby="([^"]+)"', control.group(0))
    assert described and f"{field_id}-error" in described.group(1).split()
    message = re.search(rf'<p class="error" id="{field_id}-error" role="alert">(.*?)</p>', page)
    assert message, f"no error for {field_id}"
    return html.unescape(message.group(1))


def value_of(page: str, field_id: str) -> str:
    control = re.search(rf'<input[^>]* id="{field_id}"[^>]*>', page)
    assert control
    found = re.search(r'value="([^"]*)"', control.group(0))
    return html.unescape(found.group(1)) if found else ""


async def test_the_page_lists_what_the_api_made_in_firing_order(signed_in, user_client, user):
    browser, _ = await signed_in(user)
    empty = await browser.get("/ui/me")
    assert empty.status_code == 200
    assert '<a href="/ui/me" aria-current="page">My page</a>' in empty.text
    assert "With no rules, you are paged by your notification preferences." in empty.text
    assert "No contact methods yet." in empty.text

    sms = await user_client.post(
        METHODS, json={"type": "sms", "address": NUMBER, "label": "Mobile"}
    )
    voice = await user_client.post(METHODS, json={"type": "voice", "address": NUMBER})
    slack = await user_client.post(METHODS, json={"type": "slack", "address": "U012AB3CD"})
    own = await user_client.post(METHODS, json={"type": "email", "address": user.email})
    for made in (sms, voice, slack, own):
        assert made.status_code == 201, made.text
    for method, delay, severity in (
        (voice, 2, "info"),
        (sms, 0, "info"),
        (slack, 10, "high"),
        (own, 1, "critical"),
    ):
        body = {"contact_method_id": method.json()["id"], "delay_minutes": delay}
        made = await user_client.post(RULES, json=body | {"min_severity": severity})
        assert made.status_code == 201, made.text

    page = (await browser.get("/ui/me")).text
    assert lines(page, "data-method") == [
        f"Text message {NUMBER} (Mobile) not verified Send code to {NUMBER} "
        f"Delete Text message {NUMBER}",
        f"Phone call {NUMBER} not verified Send code to {NUMBER} Delete Phone call {NUMBER}",
        "Slack U012AB3CD verified Delete Slack U012AB3CD",
        f"Email {user.email} verified Delete Email {user.email}",
    ]
    rules = [re.sub(r" Delete rule: .*", "", line) for line in lines(page, "data-rule")]
    assert rules == [
        f"Text message {NUMBER} at once (not verified: not paged until it is)",
        f"Email {user.email} after 1 minute, only critical",
        f"Phone call {NUMBER} after 2 minutes (not verified: not paged until it is)",
        "Slack U012AB3CD after 10 minutes, only high and critical",
    ]
    # What the API answers, in the same order (by delay).
    assert [r["delay_minutes"] for r in await api_rules(user_client)] == [0, 1, 2, 10]


async def test_adding_a_method_and_a_rule_through_the_forms(signed_in, user_client, user):
    browser, token = await signed_in(user)
    added = await browser.post(
        "/ui/me/methods",
        data={"csrf_token": token, "type": "voice", "address": " +1 (415) 555-2671 ",
              "label": "Desk"},
    )  # fmt: skip
    assert added.status_code == 303 and added.headers["location"] == "/ui/me?done=method-added"
    [method] = await api_methods(user_client)
    assert (method["type"], method["address"], method["label"]) == ("voice", NUMBER, "Desk")
    assert method["verified"] is False
    page = await browser.get(added.headers["location"])
    assert '<p class="notice" role="status">Contact method added.</p>' in page.text

    rule = await browser.post(
        "/ui/me/rules",
        data={"csrf_token": token, "contact_method_id": str(method["id"]), "delay_minutes": "5",
              "min_severity": "medium"},
    )  # fmt: skip
    assert rule.status_code == 303 and rule.headers["location"] == "/ui/me?done=rule-added"
    [stored] = await api_rules(user_client)
    assert (stored["contact_method_id"], stored["delay_minutes"], stored["min_severity"]) == (
        method["id"], 5, "medium",
    )  # fmt: skip
    page = (await browser.get("/ui/me")).text
    assert lines(page, "data-rule")[0].startswith(
        f"Phone call {NUMBER} after 5 minutes, only medium, high and critical"
    )


async def test_refused_forms_say_why_beside_the_field_and_keep_what_was_typed(
    signed_in, user_client, user, harness
):
    browser, token = await signed_in(user)
    typed = "+1 555 123 4567"
    bad = await browser.post(
        "/ui/me/methods",
        data={"csrf_token": token, "type": "sms", "address": typed, "label": "Work <phone>"},
    )
    assert bad.status_code == 422
    assert field_error(bad.text, "method-address") == (
        "not a valid phone number: check the country code and the number of digits"
    )
    assert value_of(bad.text, "method-address") == typed
    assert value_of(bad.text, "method-label") == "Work <phone>"
    assert 'value="sms" selected' in bad.text
    assert await counts(harness) == (0, 0, 0)

    unknown = await browser.post(
        "/ui/me/methods", data={"csrf_token": token, "type": "pager", "address": "x"}
    )
    assert unknown.status_code == 422
    assert "email" in field_error(unknown.text, "method-type")

    first = await browser.post(
        "/ui/me/methods", data={"csrf_token": token, "type": "sms", "address": NUMBER}
    )
    assert first.status_code == 303
    again = await browser.post(
        "/ui/me/methods", data={"csrf_token": token, "type": "sms", "address": "+1 415 555 2671"}
    )
    assert again.status_code == 409
    assert field_error(again.text, "method-address").startswith(
        "You have this sms contact method already"
    )
    [method] = await api_methods(user_client)

    for delay, status, message in (
        ("1441", 422, "less than or equal to 1440"),
        ("-1", 422, "greater than or equal to 0"),
        ("soon", 422, "a whole number of minutes, from 0 to 1440"),
        ("", 422, "a whole number of minutes, from 0 to 1440"),
    ):
        refused = await browser.post(
            "/ui/me/rules",
            data={"csrf_token": token, "contact_method_id": str(method["id"]),
                  "delay_minutes": delay, "min_severity": "high"},
        )  # fmt: skip
        assert refused.status_code == status, (delay, refused.text[:2000])
        assert message in field_error(refused.text, "rule-delay"), delay
        assert value_of(refused.text, "rule-delay") == delay
        assert 'value="high" selected' in refused.text
    made = await browser.post(
        "/ui/me/rules",
        data={"csrf_token": token, "contact_method_id": str(method["id"]), "delay_minutes": "3"},
    )
    assert made.status_code == 303
    clash = await browser.post(
        "/ui/me/rules",
        data={"csrf_token": token, "contact_method_id": str(method["id"]), "delay_minutes": "3"},
    )
    assert clash.status_code == 409
    assert "already notifies by this method after 3 minute(s)" in clash.text
    assert len(await api_rules(user_client)) == 1


async def test_a_number_is_proven_with_the_code_sent_to_it(
    signed_in, user_client, user, harness, settings
):
    browser, token = await signed_in(user)
    await browser.post(
        "/ui/me/methods", data={"csrf_token": token, "type": "sms", "address": NUMBER}
    )
    [method] = await api_methods(user_client)
    mid = method["id"]
    before = (await browser.get("/ui/me")).text
    assert f'id="code-{mid}"' not in before  # no code field before a code is sent

    sent = await browser.post(f"/ui/me/methods/{mid}/send-code", data={"csrf_token": token})
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/ui/me?sent={mid}#method-{mid}"
    page = (await browser.get(f"/ui/me?sent={mid}")).text
    assert (
        f'<p class="notice" role="status">A code was sent to {NUMBER} by text message: enter it '
        "below within 15 minutes.</p>"
    ) in page
    assert f'<label for="code-{mid}">Code' in page
    [row] = await delivery_log(harness, event="address_verification")
    assert (row.channel, row.address, row.user_id) == ("sms", NUMBER, user.id)
    code = code_for(settings.secret_key, row.payload["nonce"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    for left in (4, 3):  # each wrong code counts
        refused = await browser.post(
            f"/ui/me/methods/{mid}/confirm", data={"csrf_token": token, "code": wrong}
        )
        assert refused.status_code == 400
        assert field_error(refused.text, f"code-{mid}") == (
            f"Wrong code: {left} attempt(s) left for this code"
        )
    short = await browser.post(
        f"/ui/me/methods/{mid}/confirm", data={"csrf_token": token, "code": "12345"}
    )
    assert short.status_code == 422
    assert field_error(short.text, f"code-{mid}") == "Enter the 6 digits of the code."
    assert (await api_methods(user_client))[0]["verified"] is False

    right = await browser.post(
        f"/ui/me/methods/{mid}/confirm", data={"csrf_token": token, "code": code}
    )
    assert right.status_code == 303
    assert right.headers["location"] == f"/ui/me?verified={mid}#method-{mid}"
    page = (await browser.get(f"/ui/me?verified={mid}")).text
    assert f"Text message {NUMBER} is verified: pages go there now." in page
    assert lines(page, "data-method") == [
        f"Text message {NUMBER} verified Delete Text message {NUMBER}"
    ]
    assert (await api_methods(user_client))[0]["verified"] is True
    # Verified: asking for another code is refused, beside the method.
    again = await browser.post(f"/ui/me/methods/{mid}/send-code", data={"csrf_token": token})
    assert again.status_code == 409
    assert f"{NUMBER} is verified already" in again.text
    assert len(await delivery_log(harness, event="address_verification")) == 1
    # A Slack member id has nothing to prove: refused beside it, nothing sent.
    slack = await user_client.post(METHODS, json={"type": "slack", "address": "U0SLACK"})
    sid = slack.json()["id"]
    for action, data in (("send-code", {}), ("confirm", {"code": "123456"})):
        answer = await browser.post(
            f"/ui/me/methods/{sid}/{action}", data={"csrf_token": token} | data
        )
        assert answer.status_code == 422, action
        assert (
            f'<p class="error" id="code-{sid}-error" role="alert">'
            "A Slack contact method needs no verification</p>"
        ) in answer.text
    assert len(await delivery_log(harness, event="address_verification")) == 1


async def test_an_expired_code_says_so(signed_in, user_client, user, harness, settings):
    browser, token = await signed_in(user)
    await browser.post(
        "/ui/me/methods",
        data={"csrf_token": token, "type": "email", "address": "pager@example.com"},
    )
    [method] = await api_methods(user_client)
    mid = method["id"]
    await browser.post(f"/ui/me/methods/{mid}/send-code", data={"csrf_token": token})
    [row] = await delivery_log(harness, event="address_verification")
    assert (row.channel, row.address) == ("email", "pager@example.com")
    page = (await browser.get(f"/ui/me?sent={mid}")).text
    assert "A code was sent to pager@example.com by email" in page
    harness.clock.advance(minutes=16)
    late = await browser.post(
        f"/ui/me/methods/{mid}/confirm",
        data={"csrf_token": token, "code": code_for(settings.secret_key, row.payload["nonce"])},
    )
    assert late.status_code == 410
    assert field_error(late.text, f"code-{mid}") == "The code has expired: ask for a new one"
    assert "Send a new code<span" in late.text
    assert (await api_methods(user_client))[0]["verified"] is False


async def test_codes_asked_for_in_the_console_and_the_api_share_one_limit(
    signed_in, user_client, user, harness, settings
):
    browser, token = await signed_in(user)
    made = await user_client.post(METHODS, json={"type": "sms", "address": NUMBER})
    mid = made.json()["id"]
    allowed = settings.rate_limit_verification_per_user_per_hour
    for number in range(allowed):
        if number % 2:
            answer = await user_client.post(f"{METHODS}/{mid}/verify")
            assert answer.status_code == 202, answer.text
        else:
            answer = await browser.post(
                f"/ui/me/methods/{mid}/send-code", data={"csrf_token": token}
            )
            assert answer.status_code == 303, answer.text[:2000]
    refused = await browser.post(f"/ui/me/methods/{mid}/send-code", data={"csrf_token": token})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert field_error(refused.text, f"code-{mid}").startswith(
        "Too many verification codes asked for; try again in"
    )
    api = await user_client.post(f"{METHODS}/{mid}/verify")
    assert api.status_code == 429
    assert len(await delivery_log(harness, event="address_verification")) == allowed


async def test_deleting_a_method_asks_first_and_takes_its_rules(
    signed_in, user_client, user, harness
):
    browser, token = await signed_in(user)
    sms = (await user_client.post(METHODS, json={"type": "sms", "address": NUMBER})).json()
    slack = (await user_client.post(METHODS, json={"type": "slack", "address": "U0KEEP"})).json()
    for method, delay in ((sms, 0), (sms, 5), (slack, 1)):
        body = {"contact_method_id": method["id"], "delay_minutes": delay}
        assert (await user_client.post(RULES, json=body)).status_code == 201

    page = (await browser.get("/ui/me")).text
    assert f'href="/ui/me?delete_method={sms["id"]}#confirm"' in page
    confirm = await browser.get(f"/ui/me?delete_method={sms['id']}")
    assert confirm.status_code == 200
    assert f"Delete Text message {NUMBER}?" in confirm.text
    assert "The 2 rules that use it will be deleted with it." in confirm.text
    assert len(await api_methods(user_client)) == 2  # asking changed nothing

    deleted = await browser.post(f"/ui/me/methods/{sms['id']}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert [m["id"] for m in await api_methods(user_client)] == [slack["id"]]
    [kept] = await api_rules(user_client)
    assert kept["contact_method_id"] == slack["id"]
    page = (await browser.get(deleted.headers["location"])).text
    assert "Contact method deleted, and the rules that used it." in page

    gone = await browser.post(f"/ui/me/rules/{kept['id']}/delete", data={"csrf_token": token})
    assert gone.status_code == 303
    assert await api_rules(user_client) == []
    page = (await browser.get(gone.headers["location"])).text
    assert "Rule deleted." in page
    assert "No rules: you are paged by your notification preferences." in page


async def test_another_users_methods_and_rules_are_out_of_reach(signed_in, user, factory, harness):
    stranger = await factory.user()
    theirs = await factory.contact_method(user_id=stranger.id)
    their_rule = await factory.notification_rule(user_id=stranger.id, contact_method_id=theirs.id)
    await factory.contact_method(user_id=user.id)  # the rule form is shown
    browser, token = await signed_in(user)
    before = await counts(harness)
    for path, data in (
        (f"/ui/me/methods/{theirs.id}/delete", {}),
        (f"/ui/me/methods/{theirs.id}/send-code", {}),
        (f"/ui/me/methods/{theirs.id}/confirm", {"code": "123456"}),
        (f"/ui/me/rules/{their_rule.id}/delete", {}),
    ):
        answer = await browser.post(path, data={"csrf_token": token} | data)
        assert answer.status_code == 404, (path, answer.status_code)
    assert (await browser.get(f"/ui/me?delete_method={theirs.id}")).status_code == 404
    rule = await browser.post(
        "/ui/me/rules",
        data={"csrf_token": token, "contact_method_id": str(theirs.id), "delay_minutes": "0"},
    )
    assert rule.status_code == 422
    assert field_error(rule.text, "rule-method") == "not one of your contact methods"
    assert await counts(harness) == before
    assert await delivery_log(harness) == []


async def test_every_form_needs_the_sessions_csrf_token(signed_in, user, factory, harness):
    browser, token = await signed_in(user)
    mine = await factory.contact_method(user_id=user.id)
    rule = await factory.notification_rule(user_id=user.id, contact_method_id=mine.id)
    before = await counts(harness)
    forms = {
        "/ui/me/methods": {"type": "sms", "address": "+14155550100"},
        "/ui/me/rules": {"contact_method_id": str(mine.id), "delay_minutes": "7"},
        f"/ui/me/methods/{mine.id}/send-code": {},
        f"/ui/me/methods/{mine.id}/confirm": {"code": "123456"},
        f"/ui/me/methods/{mine.id}/delete": {},
        f"/ui/me/rules/{rule.id}/delete": {},
    }
    for path, data in forms.items():
        for sent in ({}, {"csrf_token": token[::-1]}):
            answer = await browser.post(path, data=data | sent)
            assert answer.status_code == 403, (path, answer.status_code)
            assert "Please try again" in answer.text
    assert await counts(harness) == before
    assert await delivery_log(harness) == []


async def test_api_keys_are_made_shown_once_and_revoked_after_asking(
    signed_in, user, user_client, harness
):
    browser, token = await signed_in(user)
    page = (await browser.get("/ui/me")).text
    assert "No API keys." in page
    assert '<option value="admin"' not in page  # at most the user's own role
    made = await browser.post(
        "/ui/me/keys",
        data={"csrf_token": token, "name": "Deploys", "role": "user", "expires": "2099-01-01"},
    )
    assert made.status_code == 201
    secret = re.search(r'<code data-field="new-key">([^<]+)</code>', made.text).group(1)
    [key] = (await user_client.get("/v1/api-keys")).json()["items"]
    assert (key["name"], key["role"], key["expires_at"]) == (
        "Deploys",
        "user",
        "2099-01-01T00:00:00Z",
    )
    async with harness.make_client(secret) as keyed:
        assert (await keyed.get("/v1/users/me")).json()["id"] == user.id
    listed = (await browser.get("/ui/me")).text
    assert secret not in listed and key["prefix"] in listed
    # More than the user's role: refused, nothing made.
    asked = await browser.post(
        "/ui/me/keys", data={"csrf_token": token, "name": "Root", "role": "admin"}
    )
    assert asked.status_code == 403
    assert field_error(asked.text, "key-role") == "at most your own role (user)"
    assert len((await user_client.get("/v1/api-keys")).json()["items"]) == 1
    # Revoking asks first (a page, no JavaScript), then a POST form does it.
    confirm = await browser.get(f"/ui/me?revoke_key={key['id']}")
    assert f"Revoke Deploys ({key['prefix']})?" in confirm.text
    assert (await user_client.get(f"/v1/api-keys/{key['id']}")).json()["revoked_at"] is None
    revoked = await browser.post(f"/ui/me/keys/{key['id']}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    assert "API key revoked" in (await browser.get(revoked.headers["location"])).text
    async with harness.make_client(secret) as keyed:
        assert (await keyed.get("/v1/users/me")).status_code == 401
    # Without the CSRF token, nothing.
    refused = await browser.post("/ui/me/keys", data={"name": "x", "role": "read-only"})
    assert refused.status_code == 403
    assert len((await user_client.get("/v1/api-keys")).json()["items"]) == 1
