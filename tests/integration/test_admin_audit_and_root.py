"""The audit log (filters, time window, cursor pages, who and from where) and rotation of the
root token on a running cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.chatclient import Cluster, start_cluster
from tests.integration.adminclient import USER_AGENT, audit, call, create_admin


async def test_every_admin_action_is_recorded_with_who_and_where(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "admin", name="auditor")
    r = await call(cluster, "POST", "/apps", admin.token, json={"name": "audited"})
    app_id = r.json()["app_id"]
    await call(cluster, "PATCH", f"/apps/{app_id}", admin.token, json={"name": "audited-2"})
    await call(cluster, "PUT", f"/apps/{app_id}/settings", admin.token,
               json={"message_retention_days": 7})
    await call(cluster, "POST", f"/apps/{app_id}/secret/rotate", admin.token,
               json={"grace_seconds": 10})
    await call(cluster, "POST", f"/apps/{app_id}/disable", admin.token)
    entries = await audit(cluster, actor=admin.id, app_id=app_id)
    assert [e["action"] for e in entries] == [
        "app.disable", "app.secret.rotate", "app.settings.update", "app.rename", "app.create"]
    for e in entries:
        assert e["actor"] == admin.id and e["target"] == app_id and e["outcome"] == "ok"
        assert e["ip"] == "127.0.0.1" and e["user_agent"] == USER_AGENT
        assert e["at"].endswith("Z")
    assert "app_secret" not in json.dumps(entries), "secrets never reach the log"
    logins = await audit(cluster, actor=admin.id, action="admin.login")
    assert logins[0]["outcome"] == "ok" and logins[0]["target"] == admin.id
    created = await audit(cluster, action="admin.create", actor="root")
    assert any(e["target"] == admin.id for e in created)


async def test_audit_pages_and_time_window(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "admin", name="pager")
    started = datetime.now(UTC) - timedelta(seconds=1)
    app_id, _ = await cluster.new_app("paged")
    for i in range(7):
        r = await call(cluster, "PATCH", f"/apps/{app_id}", admin.token, json={"name": f"n{i}"})
        assert r.status_code == 200
    everything = await audit(cluster, app_id=app_id, action="app.rename")
    assert [e["detail"]["to"] for e in everything] == [f"n{i}" for i in range(6, -1, -1)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"app_id": app_id, "action": "app.rename", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await call(cluster, "GET", "/audit", cluster.admin_token, params=params)
        assert r.status_code == 200 and len(r.json()["entries"]) <= 3
        seen += [e["id"] for e in r.json()["entries"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything]
    later = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    assert len(await audit(cluster, app_id=app_id, since=started.isoformat(),
                           until=later)) == 8
    assert await audit(cluster, app_id=app_id, since=later) == []
    assert await audit(cluster, app_id=app_id, until=started.isoformat()) == []
    r = await call(cluster, "GET", "/audit", cluster.admin_token, params={"cursor": "bm9wZQ=="})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


async def test_the_root_token_rotates_everywhere_and_persists(cluster: Cluster) -> None:
    owner = await create_admin(cluster, "owner", name="rotator")
    old = cluster.admin_token
    r = await call(cluster, "POST", "/root-token/rotate", old)
    assert r.status_code == 200
    new = r.json()["admin_token"]
    cluster.admin_token = new  # the rest of the session uses the new one
    assert new != old
    r = await call(cluster, "GET", "/apps", old)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert (await call(cluster, "POST", "/apps", old, json={"name": "x"})).status_code == 401
    r = await call(cluster, "POST", "/apps", new, json={"name": "after-rotation"})
    assert r.status_code == 201
    assert (await call(cluster, "GET", "/me", owner.token)).status_code == 200, (
        "admin tokens are not root tokens: they survive")
    saved = json.loads((cluster.state_dir / "credentials.json").read_text())
    assert saved["admin_token"] == new, "the next `chatcluster up` prints the working token"
    # An owner can rotate it too (e.g. after a leak), and the previous one stops.
    r = await call(cluster, "POST", "/root-token/rotate", owner.token)
    assert r.status_code == 200
    newest = r.json()["admin_token"]
    cluster.admin_token = newest
    assert (await call(cluster, "GET", "/apps", new)).status_code == 401
    assert (await call(cluster, "GET", "/apps", newest)).status_code == 200
    rotations = await audit(cluster, action="root_token.rotate")
    assert [e["actor"] for e in rotations[:2]] == [owner.id, "root"]
    assert new not in json.dumps(rotations) and newest not in json.dumps(rotations)


async def test_a_rotated_root_token_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_cluster(state)
    try:
        r = await call(first, "POST", "/root-token/rotate", first.admin_token)
        new = r.json()["admin_token"]
    finally:
        first.stop()
    restarted = start_cluster(state)
    try:
        assert restarted.admin_token == new, "the ready line prints the token that works"
        assert (await call(restarted, "GET", "/apps", new)).status_code == 200
        assert (await call(restarted, "GET", "/apps", first.admin_token)).status_code == 401
    finally:
        restarted.stop()
