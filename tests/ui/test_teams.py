"""The team pages (/ui/teams): who sees which team, managers changing members through the forms,
refusals shown on the page with nothing changed, and admins creating and deleting teams. Every
check reads the database back, not only the page."""

from __future__ import annotations

import html
import re

from sqlalchemy import func, select

from app.teams.models import Team, TeamMember
from tests.support.accessibility import accessibility_problems


async def roles(harness, team_id: int) -> dict[int, str]:
    """The team's members and their roles, as stored."""
    async with harness.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(TeamMember.user_id, TeamMember.role).where(TeamMember.team_id == team_id)
        )
        return {user_id: role for user_id, role in rows}


async def stored_team(harness, team_id: int) -> Team | None:
    async with harness.app.state.sessionmaker() as session:
        return await session.get(Team, team_id)


async def team_count(harness) -> int:
    async with harness.app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Team)) or 0)


def text(page: str) -> str:
    """The page's words, tags dropped, spaces squeezed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def error_of(page: str) -> str:
    found = re.search(r'<p class="error" role="alert"[^>]*>(.*?)</p>', page, flags=re.S)
    assert found, "no error on the page"
    return html.unescape(found.group(1))


def listed(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li data-team="(\d+)"', page)]


def forms(page: str) -> list[str]:
    """The actions of the page's POST forms, sign-out left aside."""
    found = re.findall(r'<form[^>]* method="post" action="([^"]+)"', page)
    return [action for action in found if action != "/ui/logout"]


async def managed(factory, user, **team):
    """A team with `user` as its manager, and a responder."""
    made = await factory.team(**team)
    await factory.member(team_id=made.id, user_id=user.id, role="manager")
    responder = await factory.user(full_name="Rita Responder")
    await factory.member(team_id=made.id, user_id=responder.id, role="responder")
    return made, responder


class TestManager:
    async def test_adds_a_member_changes_a_role_and_removes_after_confirming(
        self, harness, signed_in, factory, user
    ):
        team, responder = await managed(factory, user, name="Payments")
        newcomer = await factory.user(email="nora@example.com", full_name="Nora New")
        browser, token = await signed_in(user)

        shown = await browser.get(f"/ui/teams/{team.id}")
        assert shown.status_code == 200
        assert f"/ui/teams/{team.id}/members" in forms(shown.text)

        added = await browser.post(
            f"/ui/teams/{team.id}/members",
            data={"csrf_token": token, "email": "NORA@example.com", "role": "observer"},
        )
        assert added.status_code == 303
        assert added.headers["location"] == f"/ui/teams/{team.id}?done=member-added#members"
        assert (await roles(harness, team.id))[newcomer.id] == "observer"
        after = await browser.get(added.headers["location"])
        assert "Member added." in after.text and "Nora New" in after.text

        changed = await browser.post(
            f"/ui/teams/{team.id}/members/{newcomer.id}/role",
            data={"csrf_token": token, "role": "responder"},
        )
        assert changed.status_code == 303
        assert (await roles(harness, team.id))[newcomer.id] == "responder"

        # Removing is two steps: a page that asks, then its POST form (no JavaScript needed).
        asked = await browser.get(f"/ui/teams/{team.id}?remove={newcomer.id}")
        assert asked.status_code == 200
        assert "Remove Nora New from Payments?" in text(asked.text)
        action = f"/ui/teams/{team.id}/members/{newcomer.id}/remove"
        assert action in forms(asked.text)
        assert newcomer.id in await roles(harness, team.id)  # asking changed nothing
        removed = await browser.post(action, data={"csrf_token": token})
        assert removed.status_code == 303
        assert await roles(harness, team.id) == {user.id: "manager", responder.id: "responder"}

    async def test_cannot_remove_nor_demote_the_last_manager(
        self, harness, signed_in, factory, user
    ):
        team, responder = await managed(factory, user, name="Payments")
        browser, token = await signed_in(user)
        before = await roles(harness, team.id)

        removed = await browser.post(
            f"/ui/teams/{team.id}/members/{user.id}/remove", data={"csrf_token": token}
        )
        assert removed.status_code == 409
        assert "Payments would have no manager left" in error_of(removed.text)
        assert "<h1>Payments" in removed.text  # the team page again, not an error page
        demoted = await browser.post(
            f"/ui/teams/{team.id}/members/{user.id}/role",
            data={"csrf_token": token, "role": "observer"},
        )
        assert demoted.status_code == 409
        assert "no manager left" in error_of(demoted.text)
        assert await roles(harness, team.id) == before

        # With a second manager, the first may step down.
        promoted = await browser.post(
            f"/ui/teams/{team.id}/members/{responder.id}/role",
            data={"csrf_token": token, "role": "manager"},
        )
        assert promoted.status_code == 303
        demoted = await browser.post(
            f"/ui/teams/{team.id}/members/{user.id}/role",
            data={"csrf_token": token, "role": "observer"},
        )
        assert demoted.status_code == 303
        assert await roles(harness, team.id) == {user.id: "observer", responder.id: "manager"}
        # Now an observer: the forms are gone.
        assert forms((await browser.get(f"/ui/teams/{team.id}")).text) == []

    async def test_refusals_show_the_reason_and_keep_what_was_typed(
        self, harness, signed_in, factory, user
    ):
        team, responder = await managed(factory, user, name="Payments")
        gone = await factory.user(email="gone@example.com", is_active=False)
        await factory.team(name="Search")
        browser, token = await signed_in(user)
        before = await roles(harness, team.id)
        url = f"/ui/teams/{team.id}/members"

        cases = [
            ({"email": "nobody@example.com", "role": "observer"}, 422, "No user has the email"),
            ({"email": "gone@example.com", "role": "observer"}, 422, "is deactivated"),
            ({"email": responder.email, "role": "observer"}, 409, "already a member"),
            ({"email": "not an address", "role": "observer"}, 422, "email"),
            ({"email": "nobody@example.com", "role": "owner"}, 422, "role"),
        ]
        for data, status, reason in cases:
            answer = await browser.post(url, data={"csrf_token": token, **data})
            assert answer.status_code == status, (data, answer.status_code)
            assert reason in error_of(answer.text), data
            assert f'value="{html.escape(data["email"])}"' in answer.text  # what was typed
        assert await roles(harness, team.id) == before
        assert gone.id not in before

        wrong_role = await browser.post(
            f"/ui/teams/{team.id}/members/{responder.id}/role",
            data={"csrf_token": token, "role": "boss"},
        )
        assert wrong_role.status_code == 422
        stranger = await factory.user()
        not_member = await browser.post(
            f"/ui/teams/{team.id}/members/{stranger.id}/remove", data={"csrf_token": token}
        )
        assert not_member.status_code == 404
        assert "is not a member of Payments" in error_of(not_member.text)
        assert await roles(harness, team.id) == before

        taken = await browser.post(
            f"/ui/teams/{team.id}",
            data={"csrf_token": token, "name": "search", "description": "new words"},
        )
        assert taken.status_code == 409
        assert "already exists" in error_of(taken.text)
        assert "new words" in taken.text  # the form keeps what was typed
        stored = await stored_team(harness, team.id)
        assert stored is not None and (stored.name, stored.description) == ("Payments", "")
        # The page's heading is the stored name, not the refused one.
        assert "<h1>Payments" in taken.text

    async def test_edits_the_name_description_and_privacy(self, harness, signed_in, factory, user):
        team, _ = await managed(factory, user, name="Payments")
        browser, token = await signed_in(user)
        saved = await browser.post(
            f"/ui/teams/{team.id}",
            data={
                "csrf_token": token,
                "name": "  Payments Core ",
                "description": "Cards & wallets",
                "is_private": "1",
            },
        )
        assert saved.status_code == 303
        stored = await stored_team(harness, team.id)
        assert stored is not None
        assert (stored.name, stored.description, stored.is_private) == (
            "Payments Core",
            "Cards & wallets",
            True,
        )
        page = await browser.get(saved.headers["location"])
        assert "Team saved." in page.text and "Cards &amp; wallets" in page.text
        # An unticked box makes it public again.
        await browser.post(
            f"/ui/teams/{team.id}",
            data={"csrf_token": token, "name": "Payments Core", "description": ""},
        )
        stored = await stored_team(harness, team.id)
        assert stored is not None and stored.is_private is False

    async def test_a_manager_of_one_team_does_not_change_another(
        self, harness, signed_in, factory, user
    ):
        await managed(factory, user)
        other = await factory.team(name="Other")
        await factory.member(team_id=other.id, user_id=user.id, role="responder")
        browser, token = await signed_in(user)
        newcomer = await factory.user()
        answer = await browser.post(
            f"/ui/teams/{other.id}/members",
            data={"csrf_token": token, "email": newcomer.email, "role": "manager"},
        )
        assert answer.status_code == 403
        assert await roles(harness, other.id) == {user.id: "responder"}


class TestReaders:
    async def test_responders_and_observers_see_the_team_without_forms(
        self, harness, signed_in, factory, user
    ):
        team, responder = await managed(factory, user, name="Payments", is_private=True)
        observer = await factory.user(full_name="Otto Observer")
        await factory.member(team_id=team.id, user_id=observer.id, role="observer")
        for reader, role in ((responder, "responder"), (observer, "observer")):
            browser, _ = await signed_in(reader)
            page = await browser.get(f"/ui/teams/{team.id}")
            assert page.status_code == 200
            assert f'<strong data-field="my-role">{role}</strong>' in page.text
            assert "Uma User" in page.text and "Otto Observer" in page.text
            assert forms(page.text) == [], role
            assert "?remove=" not in page.text and "?delete=" not in page.text
            # Asking for the confirmation step does not show it either.
            asked = await browser.get(f"/ui/teams/{team.id}?remove={user.id}")
            assert forms(asked.text) == []

    async def test_forged_posts_from_a_responder_get_403_and_change_nothing(
        self, harness, signed_in, factory, user
    ):
        team, responder = await managed(factory, user, name="Payments")
        outsider = await factory.user()
        browser, token = await signed_in(responder)
        before = await roles(harness, team.id)
        forged = [
            (f"/ui/teams/{team.id}/members", {"email": outsider.email, "role": "manager"}),
            (f"/ui/teams/{team.id}/members/{responder.id}/role", {"role": "manager"}),
            (f"/ui/teams/{team.id}/members/{user.id}/role", {"role": "observer"}),
            (f"/ui/teams/{team.id}/members/{user.id}/remove", {}),
            (f"/ui/teams/{team.id}", {"name": "Taken over", "is_private": "1"}),
        ]
        for path, data in forged:
            answer = await browser.post(path, data={"csrf_token": token, **data})
            assert answer.status_code == 403, path
            assert "managers and admins" in error_of(answer.text), path
        deleting = await browser.post(f"/ui/teams/{team.id}/delete", data={"csrf_token": token})
        assert deleting.status_code == 403 and "Admins only" in deleting.text
        assert await roles(harness, team.id) == before
        stored = await stored_team(harness, team.id)
        assert stored is not None and (stored.name, stored.is_private) == ("Payments", False)

    async def test_a_private_team_is_hidden_from_non_members(
        self, harness, signed_in, factory, user
    ):
        secret = await factory.team(name="Secret", is_private=True)
        await factory.member(team_id=secret.id, user_id=user.id, role="manager")
        public = await factory.team(name="Open", description="Everyone reads this")
        outsider = await factory.user()
        browser, token = await signed_in(outsider)

        listing = await browser.get("/ui/teams")
        assert listed(listing.text) == [public.id]
        assert "Secret" not in listing.text
        hidden = await browser.get(f"/ui/teams/{secret.id}")
        assert hidden.status_code == 404
        assert "Secret" not in hidden.text
        missing = await browser.get("/ui/teams/999999")
        assert missing.status_code == 404
        # The same answer as for no team at all, for a POST too, and nothing changes.
        forged = await browser.post(
            f"/ui/teams/{secret.id}/members",
            data={"csrf_token": token, "email": outsider.email, "role": "manager"},
        )
        assert forged.status_code == 404
        assert await roles(harness, secret.id) == {user.id: "manager"}
        # A public team is read by everyone signed in, without forms.
        page = await browser.get(f"/ui/teams/{public.id}")
        assert page.status_code == 200 and "Everyone reads this" in page.text
        assert forms(page.text) == []

    async def test_the_list_shows_counts_roles_and_the_my_teams_filter(
        self, harness, signed_in, factory, user, admin
    ):
        mine, _ = await managed(factory, user, name="Alpha", is_private=True)
        other = await factory.team(name="Beta")
        hidden = await factory.team(name="Gamma", is_private=True)
        browser, _ = await signed_in(user)

        listing = await browser.get("/ui/teams")
        assert listed(listing.text) == [mine.id, other.id]
        words = text(listing.text)
        assert "Alpha private 2 members you: manager" in words
        assert "Beta 0 members" in words
        assert "Create a team" not in listing.text  # admins only
        assert listed((await browser.get("/ui/teams?mine=1")).text) == [mine.id]
        assert 'href="/ui/teams" aria-current="page">Teams<' in listing.text

        as_admin, _ = await signed_in(admin)
        everything = await as_admin.get("/ui/teams")
        assert listed(everything.text) == [mine.id, other.id, hidden.id]
        assert listed((await as_admin.get("/ui/teams?mine=1")).text) == []

    async def test_the_team_lists_what_it_owns(self, harness, signed_in, factory, user, admin):
        team, _ = await managed(factory, user, name="Payments")
        service = await factory.service(name="Checkout", team_id=team.id)
        await factory.service(name="Elsewhere")
        schedule = await factory.schedule(name="Payments primary", team_id=team.id)
        policy = await factory.policy(name="Payments policy", team_id=team.id)
        browser, _ = await signed_in(user)
        page = (await browser.get(f"/ui/teams/{team.id}")).text
        assert f'<a href="/ui/services#service-{service.id}">Checkout</a>' in page
        assert f'<a href="/ui/oncall#schedule-{schedule.id}">Payments primary</a>' in page
        assert "Payments policy" in page and "/ui/admin/policies/" not in page  # admins' page
        assert "Elsewhere" not in page
        as_admin, _ = await signed_in(admin)
        page = (await as_admin.get(f"/ui/teams/{team.id}")).text
        assert f'<a href="/ui/admin/policies/{policy.id}">Payments policy</a>' in page


class TestAdmin:
    async def test_creates_and_deletes_a_team(self, harness, signed_in, factory, admin):
        browser, token = await signed_in(admin)
        listing = await browser.get("/ui/teams")
        assert "/ui/teams" in forms(listing.text)
        made = await browser.post(
            "/ui/teams",
            data={"csrf_token": token, "name": "Search", "description": "Finds", "is_private": "1"},
        )
        assert made.status_code == 303
        team_id = int(re.fullmatch(r"/ui/teams/(\d+)\?done=created", made.headers["location"])[1])
        stored = await stored_team(harness, team_id)
        assert stored is not None
        assert (stored.name, stored.description, stored.is_private) == ("Search", "Finds", True)

        again = await browser.post("/ui/teams", data={"csrf_token": token, "name": "SEARCH"})
        assert again.status_code == 409 and "already exists" in error_of(again.text)
        empty = await browser.post("/ui/teams", data={"csrf_token": token, "name": "  "})
        assert empty.status_code == 422 and "name" in error_of(empty.text)
        assert await team_count(harness) == 1

        asked = await browser.get(f"/ui/teams/{team_id}?delete=1")
        assert "Delete the team Search?" in text(asked.text)
        assert f"/ui/teams/{team_id}/delete" in forms(asked.text)
        assert await stored_team(harness, team_id) is not None  # asking changed nothing
        deleted = await browser.post(f"/ui/teams/{team_id}/delete", data={"csrf_token": token})
        assert deleted.status_code == 303
        assert deleted.headers["location"] == "/ui/teams?done=deleted"
        assert await stored_team(harness, team_id) is None
        assert "Team deleted." in (await browser.get(deleted.headers["location"])).text

    async def test_a_team_that_owns_something_is_not_deleted(
        self, harness, signed_in, factory, admin, user
    ):
        team, _ = await managed(factory, user, name="Payments")
        await factory.service(name="Checkout", team_id=team.id)
        browser, token = await signed_in(admin)
        refused = await browser.post(f"/ui/teams/{team.id}/delete", data={"csrf_token": token})
        assert refused.status_code == 409
        assert "still owns services" in error_of(refused.text)
        assert "<h1>Payments" in refused.text
        assert await stored_team(harness, team.id) is not None
        assert len(await roles(harness, team.id)) == 2

    async def test_an_admin_who_is_no_member_manages_the_team(
        self, harness, signed_in, factory, admin, user
    ):
        team, responder = await managed(factory, user, name="Secret", is_private=True)
        browser, token = await signed_in(admin)
        page = await browser.get(f"/ui/teams/{team.id}")
        assert page.status_code == 200 and "You are not a member." in page.text
        changed = await browser.post(
            f"/ui/teams/{team.id}/members/{responder.id}/role",
            data={"csrf_token": token, "role": "manager"},
        )
        assert changed.status_code == 303
        assert (await roles(harness, team.id))[responder.id] == "manager"

    async def test_a_plain_user_cannot_create_a_team(self, harness, signed_in, user):
        browser, token = await signed_in(user)
        answer = await browser.post("/ui/teams", data={"csrf_token": token, "name": "Mine"})
        assert answer.status_code == 403 and "Admins only" in answer.text
        assert await team_count(harness) == 0


async def test_every_new_post_needs_the_csrf_token(harness, signed_in, factory, admin, user):
    team, responder = await managed(factory, user, name="Payments")
    other = await factory.team(name="Other")
    browser, token = await signed_in(admin)
    posts = [
        ("/ui/teams", {"name": "Forged"}),
        (f"/ui/teams/{team.id}", {"name": "Forged"}),
        (f"/ui/teams/{team.id}/members", {"email": admin.email, "role": "manager"}),
        (f"/ui/teams/{team.id}/members/{responder.id}/role", {"role": "manager"}),
        (f"/ui/teams/{team.id}/members/{responder.id}/remove", {}),
        (f"/ui/teams/{other.id}/delete", {}),
    ]
    for path, data in posts:
        for sent in ({}, {"csrf_token": "not-the-token"}):
            answer = await browser.post(path, data={**data, **sent})
            assert answer.status_code == 403, (path, sent)
            assert "Please try again" in answer.text
    assert await roles(harness, team.id) == {user.id: "manager", responder.id: "responder"}
    assert await team_count(harness) == 2
    stored = await stored_team(harness, team.id)
    assert stored is not None and stored.name == "Payments"
    # The real token works (the refusals above did not end the session).
    ok = await browser.post(f"/ui/teams/{other.id}/delete", data={"csrf_token": token})
    assert ok.status_code == 303


async def test_the_team_pages_are_labelled_in_every_state(harness, signed_in, factory, admin, user):
    team, responder = await managed(factory, user, name="Payments", description="Cards")
    await factory.service(name="Checkout", team_id=team.id)
    manager, token = await signed_in(user)
    reader, _ = await signed_in(responder)
    as_admin, admin_token = await signed_in(admin)
    pages = {
        "list, admin": await as_admin.get("/ui/teams"),
        "list, member": await manager.get("/ui/teams?mine=1"),
        "team, manager": await manager.get(f"/ui/teams/{team.id}"),
        "team, reader": await reader.get(f"/ui/teams/{team.id}"),
        "confirming a removal": await manager.get(f"/ui/teams/{team.id}?remove={responder.id}"),
        "confirming a delete": await as_admin.get(f"/ui/teams/{team.id}?delete=1"),
        "a refused member": await manager.post(
            f"/ui/teams/{team.id}/members",
            data={"csrf_token": token, "email": "x@example.com", "role": "observer"},
        ),
        "a refused team": await as_admin.post(
            "/ui/teams", data={"csrf_token": admin_token, "name": ""}
        ),
    }
    for state, answer in pages.items():
        assert answer.status_code in (200, 422), (state, answer.status_code)
        assert accessibility_problems(answer.text) == [], state


async def test_the_directory_pages_hide_a_private_teams_services_and_schedules(
    harness, signed_in, factory, user
):
    hidden = await factory.team(is_private=True)
    await factory.service(name="secret-billing", team_id=hidden.id)
    await factory.schedule(name="Secret rota", team_id=hidden.id)
    await factory.service(name="open-checkout")
    browser, _ = await signed_in(user)
    services = text((await browser.get("/ui/services")).text)
    oncall = text((await browser.get("/ui/oncall")).text)
    assert "open-checkout" in services and "secret-billing" not in services
    assert "Secret rota" not in oncall
    await factory.member(team_id=hidden.id, user_id=user.id, role="observer")
    assert "secret-billing" in text((await browser.get("/ui/services")).text)
    assert "Secret rota" in text((await browser.get("/ui/oncall")).text)


async def test_an_observer_reads_a_teams_incident_without_action_buttons(
    harness, signed_in, factory, user
):
    team = await factory.team()
    await factory.member(team_id=team.id, user_id=user.id, role="observer")
    incident = await factory.incident(service_id=(await factory.service(team_id=team.id)).id)
    browser, token = await signed_in(user)
    shown = await browser.get(f"/ui/incidents/{incident.id}")
    assert shown.status_code == 200
    assert forms(shown.text) == [] and "needs its team's responder role" in text(shown.text)
    refused = await browser.post(
        f"/ui/incidents/{incident.id}/acknowledge", data={"csrf_token": token}
    )
    assert refused.status_code == 403 and "responder" in text(refused.text)
    async with harness.app.state.sessionmaker() as session:
        member = await session.scalar(select(TeamMember).where(TeamMember.user_id == user.id))
        member.role = "responder"
        await session.commit()
    shown = await browser.get(f"/ui/incidents/{incident.id}")
    assert f"/ui/incidents/{incident.id}/acknowledge" in forms(shown.text)
