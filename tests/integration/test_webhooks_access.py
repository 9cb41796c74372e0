"""Who may call the webhook and usage routes: each admin role, admins scoped to another app,
no token and a wrong token."""

from __future__ import annotations

import pytest

from tests.chatclient import Cluster
from tests.integration.adminclient import call, create_admin
from tests.integration.hooks import Admin, admin, hooks_cluster

__all__ = ["admin", "hooks_cluster"]  # fixtures

READS = [("GET", "/webhooks"), ("GET", "/webhooks/deliveries"),
         ("GET", "/webhooks/dead-letters"), ("GET", "/usage"), ("GET", "/webhooks/{wid}")]
WRITES = [("POST", "/webhooks"), ("PATCH", "/webhooks/{wid}"),
          ("POST", "/webhooks/{wid}/secret/rotate"),
          ("POST", "/webhooks/dead-letters/dlv_none/replay"), ("DELETE", "/webhooks/{wid}")]
BODIES = {("POST", "/webhooks"): {"url": "https://example.com/h", "event_types": ["message.sent"]},
          ("PATCH", "/webhooks/{wid}"): {"description": "x"}}


def _ok(method: str, route: str, status: int) -> bool:
    if route.endswith("/replay"):
        return status == 404  # allowed, but there is no such dead letter
    return status in (200, 201, 204)


@pytest.mark.parametrize(("role", "may_write"), [("viewer", False), ("moderator", False),
                                                 ("admin", True), ("owner", True)])
async def test_role_matrix(hooks_cluster: Cluster, admin: Admin, role: str,
                           may_write: bool) -> None:
    caller = await create_admin(hooks_cluster, role)
    base = f"/api/v1/admin/apps/{admin.app_id}"
    for method, route in READS + WRITES:
        # A fresh endpoint each time, so DELETE and PATCH have something to act on.
        wid = (await admin.create_webhook("https://example.com/x", ["message.sent"]))["id"]
        path = base + route.format(wid=wid)
        r = await call(hooks_cluster, method, path, caller.token,
                       json=BODIES.get((method, route)))
        if (method, route) in READS or may_write:
            assert _ok(method, route, r.status_code), (role, method, route, r.text)
        else:
            assert r.status_code == 403, (role, method, route, r.text)
            assert r.json()["error"]["code"] == "forbidden"


async def test_no_token_wrong_token_and_another_apps_admin(hooks_cluster: Cluster,
                                                           admin: Admin) -> None:
    other_app, _ = await hooks_cluster.new_app("elsewhere")
    scoped = await create_admin(hooks_cluster, "admin", app_ids=[other_app])
    wid = (await admin.create_webhook("https://example.com/x", ["message.sent"]))["id"]
    base = f"/api/v1/admin/apps/{admin.app_id}"
    for method, route in READS + WRITES:
        path = base + route.format(wid=wid)
        body = BODIES.get((method, route))
        for token, status in ((None, 401), ("not-a-token", 401), (scoped.token, 404)):
            r = await call(hooks_cluster, method, path, token, json=body)
            assert r.status_code == status, (token, method, route, r.text)
            assert set(r.json()["error"]) == {"code", "message"}
    # The scoped admin does see its own app.
    r = await call(hooks_cluster, "GET", f"/api/v1/admin/apps/{other_app}/webhooks",
                   scoped.token)
    assert r.status_code == 200 and r.json() == {"webhooks": []}
