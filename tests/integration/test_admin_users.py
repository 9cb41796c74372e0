"""An app's users and sessions through the admin API: listing and prefix search with cursors,
a user's sessions and devices, revoking one or all (sockets close with 4001), and who may."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chatclient import Client, Cluster
from tests.integration.adminclient import Admin, audit, call, create_admin
from tests.integration.conftest import unique
from tests.integration.moderationclient import (
    RANK,
    ROLES,
    admin_call,
    every_page,
    refresh,
    sign_in,
)


@pytest.fixture
async def team(cluster: Cluster) -> dict[str, Admin]:
    return {role: await create_admin(cluster, role) for role in ROLES}


async def list_all(cluster: Cluster, **params: Any) -> list[dict[str, Any]]:
    return await every_page(cluster, f"/apps/{cluster.app_id}/users", "users", **params)


async def test_users_are_listed_and_searched_by_prefix_a_page_at_a_time(
        cluster: Cluster) -> None:
    stem = unique("zed")
    names = [f"{stem}-{i}" for i in range(5)]
    for i, name in enumerate(names):
        r = await sign_in(cluster, name, display_name=f"Person {i}")
        assert r.status_code == 200
    await sign_in(cluster, unique("named"), display_name=f"{stem} by name")
    found = await list_all(cluster, prefix=stem, limit=2)
    assert [u["user_id"] for u in found if u["user_id"].startswith(stem)] == names
    assert f"{stem} by name" in [u["display_name"] for u in found]  # a name matches too
    assert all(u["banned"] is False and u["created_at"] for u in found)
    first = (await admin_call(cluster, "GET", f"/apps/{cluster.app_id}/users",
                              params={"prefix": stem, "limit": 2})).json()
    assert len(first["users"]) == 2 and first["next_cursor"]
    assert not await list_all(cluster, prefix=stem.upper())  # case-sensitive, as documented
    everyone = await list_all(cluster, limit=200)
    assert set(names) <= {u["user_id"] for u in everyone}
    one = await admin_call(cluster, "GET", f"/apps/{cluster.app_id}/users/{names[0]}")
    assert one.json()["display_name"] == "Person 0"
    bad = await admin_call(cluster, "GET", f"/apps/{cluster.app_id}/users",
                           params={"cursor": "%%%"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


async def test_sessions_show_devices_and_revoking_closes_sockets(
        cluster: Cluster, team: dict[str, Admin]) -> None:
    user = unique("devices")
    phone = (await sign_in(cluster, user, user_agent="phone/1.0")).json()
    laptop = (await sign_in(cluster, user, user_agent="laptop/2.0")).json()
    rotated = await refresh(cluster, laptop["refresh_token"])
    assert rotated.status_code == 200
    base = f"/apps/{cluster.app_id}/users/{user}/sessions"
    sessions = (await admin_call(cluster, "GET", base, team["viewer"].token)).json()["sessions"]
    assert len(sessions) == 2
    by_agent = {s["user_agent"]: s for s in sessions}
    assert set(by_agent) == {"phone/1.0", "refresher/2.0"}  # the last device seen
    assert by_agent["phone/1.0"]["last_refresh_at"] is None
    assert by_agent["refresher/2.0"]["last_refresh_at"] is not None
    assert all(s["created_at"] and s["revoked_at"] is None and s["ip"] for s in sessions)

    on_phone = await Client.connect(cluster.socket_urls[0], phone["access_token"], user)
    on_laptop = await Client.connect(cluster.socket_urls[1], rotated.json()["access_token"], user)
    phone_session = on_phone.ready["session_id"]
    r = await admin_call(cluster, "POST", f"{base}/{phone_session}/revoke",
                         team["moderator"].token)
    assert r.status_code == 204, r.text
    assert await on_phone.closed_with(timeout=2.5) == 4001
    assert (await on_laptop.request("ping"))["ok"] is True  # the other session lives on
    assert (await refresh(cluster, phone["refresh_token"])).status_code == 401

    r = await admin_call(cluster, "POST", f"{base}/revoke", team["moderator"].token)
    assert r.status_code == 200 and r.json() == {"revoked": 1}
    assert await on_laptop.closed_with(timeout=2.5) == 4001
    sessions = (await admin_call(cluster, "GET", base)).json()["sessions"]
    assert all(s["revoked_at"] for s in sessions)
    entries = await audit(cluster, action="user.sessions.revoke", app_id=cluster.app_id)
    assert entries[0]["target"] == user and entries[0]["actor"] == team["moderator"].id
    assert (await audit(cluster, action="user.session.revoke",
                        app_id=cluster.app_id))[0]["target"] == phone_session


async def test_user_routes_enforce_roles_and_hide_other_apps(
        cluster: Cluster, team: dict[str, Admin]) -> None:
    user = unique("matrix-user")
    tokens = (await sign_in(cluster, user)).json()
    session_id = None
    app = cluster.app_id
    routes: list[tuple[str, str, str, int]] = [
        ("GET", "/apps/{app}/users", "viewer", 200),
        ("GET", "/apps/{app}/users/{user}", "viewer", 200),
        ("GET", "/apps/{app}/users/{user}/sessions", "viewer", 200),
        ("POST", "/apps/{app}/users/{user}/sessions/{session}/revoke", "moderator", 204),
        ("POST", "/apps/{app}/users/{user}/sessions/revoke", "moderator", 200),
        ("GET", "/apps/{app}/users/{user}/export", "admin", 200),
    ]
    for method, template, least, success in routes:
        actors: dict[str, tuple[str | None, int]] = {"root": (cluster.admin_token, success)}
        for role, admin in team.items():
            actors[role] = (admin.token, success if RANK[role] >= RANK[least] else 403)
        actors["no token"] = (None, 401)
        for actor, (token, expected) in actors.items():
            if "{session}" in template:
                tokens = (await sign_in(cluster, user)).json()
                sessions = (await admin_call(cluster, "GET",
                                             f"/apps/{app}/users/{user}/sessions")).json()
                session_id = next(s["id"] for s in sessions["sessions"]
                                  if s["revoked_at"] is None)
            path = template.format(app=app, user=user, session=session_id)
            r = await call(cluster, method, path, token)
            assert r.status_code == expected, (method, template, actor, r.text)
    assert tokens
    other_id, other_secret = await cluster.new_app("users-other")
    stranger = unique("stranger")
    assert (await sign_in(cluster, stranger, app=(other_id, other_secret))).status_code == 200
    scoped = await create_admin(cluster, "admin", name="scoped-users", app_ids=[app])
    for path in (f"/apps/{app}/users/{stranger}", f"/apps/{app}/users/{stranger}/sessions",
                 f"/apps/{app}/users/{stranger}/export", f"/apps/{other_id}/users",
                 f"/apps/{other_id}/users/{stranger}"):
        token = scoped.token if other_id in path else cluster.admin_token
        r = await call(cluster, "GET", path, token)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    for path in (f"/apps/{app}/users/{stranger}/sessions/revoke",
                 f"/apps/{app}/users/{stranger}/erase"):
        assert (await admin_call(cluster, "POST", path)).status_code == 404
    listed = await list_all(cluster, prefix=stranger)
    assert listed == []
