"""Who may call which admin route: every route against every role, the root token, no token,
forged and revoked tokens, and an admin scoped to one app asking about another app."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.chatclient import Cluster
from tests.integration.adminclient import Admin, audit, call, create_admin, unique_email

ROLES = ("viewer", "moderator", "admin", "owner")
Target = Callable[[Cluster], Awaitable[dict[str, str]]]


async def new_app(cluster: Cluster) -> dict[str, str]:
    app_id, _ = await cluster.new_app("matrix")
    return {"app": app_id}


async def new_victim(cluster: Cluster) -> dict[str, str]:
    victim = await create_admin(cluster, "viewer", name="victim", login=False)
    return {"admin": victim.id}


async def nothing(_: Cluster) -> dict[str, str]:
    return {}


def new_admin_body() -> dict[str, Any]:
    return {"email": unique_email("made"), "password": "another long password",
            "role": "viewer"}


# (method, path, body, target, least role, success status)
ROUTES: list[tuple[str, str, Any, Target, str, int]] = [
    ("GET", "/me", None, nothing, "viewer", 200),
    ("GET", "/apps", None, nothing, "viewer", 200),
    ("POST", "/apps", {"name": "m"}, nothing, "admin", 201),
    ("GET", "/apps/{app}", None, new_app, "viewer", 200),
    ("PATCH", "/apps/{app}", {"name": "renamed"}, new_app, "admin", 200),
    ("POST", "/apps/{app}/secret/rotate", {"grace_seconds": 0}, new_app, "admin", 200),
    ("POST", "/apps/{app}/disable", None, new_app, "admin", 200),
    ("POST", "/apps/{app}/enable", None, new_app, "admin", 200),
    ("DELETE", "/apps/{app}", None, new_app, "owner", 204),
    ("GET", "/apps/{app}/settings", None, new_app, "viewer", 200),
    ("PUT", "/apps/{app}/settings", {"message_retention_days": 30}, new_app, "admin", 200),
    ("GET", "/audit", None, nothing, "admin", 200),
    ("GET", "/admins", None, nothing, "admin", 200),
    ("GET", "/admins/{admin}", None, new_victim, "admin", 200),
    ("POST", "/admins", new_admin_body, nothing, "owner", 201),
    ("PATCH", "/admins/{admin}", {"role": "moderator"}, new_victim, "owner", 200),
    ("DELETE", "/admins/{admin}", None, new_victim, "owner", 204),
    ("POST", "/admins/{admin}/mfa/reset", None, new_victim, "owner", 200),
]
RANK = {role: i for i, role in enumerate(ROLES)}


@pytest.fixture
async def team(cluster: Cluster) -> dict[str, Admin]:
    return {role: await create_admin(cluster, role) for role in ROLES}


async def test_every_route_enforces_its_role(cluster: Cluster, team: dict[str, Admin]) -> None:
    revoked = await create_admin(cluster, "owner", name="revoked")
    assert (await call(cluster, "POST", "/logout", revoked.token)).status_code == 204
    unauthenticated = {"no token": None, "forged admin token": f"adm_{secrets.token_urlsafe(32)}",
                       "forged root token": secrets.token_urlsafe(32),
                       "logged-out token": revoked.token}
    for method, template, body, target, least, success in ROUTES:
        actors: dict[str, tuple[str | None, int]] = {
            "root": (cluster.admin_token, success)}
        for role, admin in team.items():
            actors[role] = (admin.token, success if RANK[role] >= RANK[least] else 403)
        for name, token in unauthenticated.items():
            actors[name] = (token, 401)
        for actor, (token, expected) in actors.items():
            path = template.format(**await target(cluster))
            payload = body() if callable(body) else body
            r = await call(cluster, method, path, token, json=payload)
            assert r.status_code == expected, (method, template, actor, r.text)
            if expected >= 400:
                error = r.json()["error"]
                assert error["code"] == {401: "unauthorized", 403: "forbidden"}[expected]
                assert error["message"]


async def test_a_refused_call_changes_nothing_and_is_audited(cluster: Cluster,
                                                             team: dict[str, Admin]) -> None:
    app_id, _ = await cluster.new_app("kept")
    for role in ("viewer", "moderator", "admin"):
        r = await call(cluster, "DELETE", f"/apps/{app_id}", team[role].token)
        assert r.status_code == 403
    r = await call(cluster, "GET", f"/apps/{app_id}", team["viewer"].token)
    assert r.status_code == 200 and r.json()["disabled"] is False
    denied = await audit(cluster, actor=team["admin"].id, action="access.denied")
    assert denied and denied[0]["outcome"] == "denied"
    assert denied[0]["target"] == f"/api/v1/admin/apps/{app_id}"
    assert denied[0]["detail"] == {"method": "DELETE", "needs": "owner"}


async def test_only_owners_rotate_the_root_token(cluster: Cluster,
                                                 team: dict[str, Admin]) -> None:
    for role in ("viewer", "moderator", "admin"):
        r = await call(cluster, "POST", "/root-token/rotate", team[role].token)
        assert r.status_code == 403
    assert (await call(cluster, "POST", "/root-token/rotate")).status_code == 401
    assert (await call(cluster, "GET", "/apps", cluster.admin_token)).status_code == 200


async def test_an_admin_scoped_to_one_app_cannot_see_another(cluster: Cluster) -> None:
    mine, _ = await cluster.new_app("mine")
    theirs, _ = await cluster.new_app("theirs")
    scoped = await create_admin(cluster, "admin", name="scoped", app_ids=[mine])
    assert (await call(cluster, "GET", f"/apps/{mine}", scoped.token)).status_code == 200
    for method, path, body in (("GET", "/apps/{}", None), ("PATCH", "/apps/{}", {"name": "x"}),
                               ("GET", "/apps/{}/settings", None),
                               ("PUT", "/apps/{}/settings", {}),
                               ("POST", "/apps/{}/disable", None),
                               ("POST", "/apps/{}/secret/rotate", {"grace_seconds": 0})):
        r = await call(cluster, method, path.format(theirs), scoped.token, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    listed: list[str] = []
    cursor = None
    while True:
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        page = (await call(cluster, "GET", "/apps", scoped.token, params=params)).json()
        listed += [a["app_id"] for a in page["apps"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert listed == [mine]
    r = await call(cluster, "GET", f"/apps/{theirs}", cluster.admin_token)
    assert r.json()["name"] == "theirs" and r.json()["disabled"] is False
    assert (await call(cluster, "GET", "/audit", scoped.token)).status_code == 403
    assert (await call(cluster, "POST", "/apps", scoped.token,
                       json={"name": "n"})).status_code == 403


async def test_unknown_ids_answer_404_with_the_error_shape(cluster: Cluster) -> None:
    for method, path in (("GET", "/apps/app_nope"), ("DELETE", "/apps/app_nope"),
                         ("GET", "/admins/adm_nope"), ("PATCH", "/admins/adm_nope")):
        r = await call(cluster, method, path, cluster.admin_token,
                       json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"


async def test_a_demoted_or_disabled_admin_loses_access_at_once(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "admin", name="demoted")
    assert (await call(cluster, "GET", "/audit", admin.token)).status_code == 200
    r = await call(cluster, "PATCH", f"/admins/{admin.id}", cluster.admin_token,
                   json={"role": "viewer"})
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    assert (await call(cluster, "GET", "/audit", admin.token)).status_code == 403
    assert (await call(cluster, "GET", "/apps", admin.token)).status_code == 200
    r = await call(cluster, "PATCH", f"/admins/{admin.id}", cluster.admin_token,
                   json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (await call(cluster, "GET", "/apps", admin.token)).status_code == 401


async def test_the_last_owner_cannot_be_removed(cluster: Cluster) -> None:
    others = [a for a in (await call(cluster, "GET", "/admins", cluster.admin_token)
                          ).json()["admins"] if a["role"] == "owner" and not a["disabled"]]
    for other in others:  # leave exactly one enabled owner
        r = await call(cluster, "PATCH", f"/admins/{other['id']}", cluster.admin_token,
                       json={"role": "admin"})
        assert r.status_code in (200, 409)
    owner = await create_admin(cluster, "owner", name="last-owner")
    rest = [a for a in (await call(cluster, "GET", "/admins", cluster.admin_token)
                        ).json()["admins"]
            if a["role"] == "owner" and not a["disabled"] and a["id"] != owner.id]
    for other in rest:
        r = await call(cluster, "PATCH", f"/admins/{other['id']}", cluster.admin_token,
                       json={"role": "admin"})
        assert r.status_code == 200
    for method, body in (("DELETE", None), ("PATCH", {"role": "admin"}),
                         ("PATCH", {"disabled": True})):
        r = await call(cluster, method, f"/admins/{owner.id}", cluster.admin_token, json=body)
        assert r.status_code == 409, (method, body, r.text)
        assert r.json()["error"]["code"] == "conflict"
    second = await create_admin(cluster, "owner", name="second-owner")
    r = await call(cluster, "PATCH", f"/admins/{owner.id}", cluster.admin_token,
                   json={"role": "admin"})
    assert r.status_code == 200
    assert (await call(cluster, "GET", "/me", second.token)).json()["role"] == "owner"
