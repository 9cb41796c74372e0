"""The admin API, every route under ``/api/v1/admin/`` (docs/admin.md).

    auth.py     AdminAuth: root token (rotatable) or admin token -> AdminPrincipal;
                require_role(min_role) dependency (viewer < moderator < admin < owner); Auditor
    admins.py   login + lockout, TOTP MFA and recovery codes, admin users, root-token rotation
    apps.py     apps (tenants): create, list, get, rename, secret rotation with grace,
                disable/enable, delete, settings
    audit.py    GET /audit: filters and cursor pagination

Other admin routers (webhooks, usage...) are factories ``authorize -> APIRouter``, where
``authorize(min_role)`` is ``AdminAuth.require_role``: ``mount_admin`` includes them after its
own, so every route shares one notion of who may do what.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from chatcluster.ports.admin import AdminStore
from chatcluster.ports.fanout import Fanout
from chatcluster.ports.store import Store

from . import admins, apps, audit
from .auth import AdminAuth, AdminError, AdminPrincipal, Auditor, Clock, admin_error_response

__all__ = ["AdminAuth", "AdminPrincipal", "RouterFactory", "mount_admin"]

Authorize = Callable[[str], Any]
RouterFactory = Callable[[Authorize], APIRouter]


def mount_admin(app: FastAPI, *, store: Store, admin_store: AdminStore, fanout: Fanout,
                root_token: str, clock: Clock = time.time,
                on_root_rotated: Callable[[str], None] | None = None,
                extra_routers: Sequence[RouterFactory] = (),
                on_app_changed: Callable[[str], None] = lambda _: None) -> AdminAuth:
    auth = AdminAuth(admin_store, root_token, Auditor(admin_store), clock)
    app.add_exception_handler(AdminError, admin_error_response)
    app.include_router(admins.build_router(auth=auth, store=admin_store,
                                           on_root_rotated=on_root_rotated))
    app.include_router(apps.build_router(auth=auth, store=store, admin_store=admin_store,
                                         fanout=fanout, on_app_changed=on_app_changed))
    app.include_router(audit.build_router(auth=auth, store=admin_store))
    for factory in extra_routers:
        app.include_router(factory(auth.require_role))
    return auth
