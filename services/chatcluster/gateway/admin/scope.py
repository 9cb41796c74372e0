"""Which apps an admin call may touch: one check shared by every per-app admin router."""

from __future__ import annotations

from typing import Any

from chatcluster.domain.errors import NotFound
from chatcluster.ports.store import Store


async def require_app(apps: Store, me: Any, app_id: str) -> None:
    """``NotFound`` unless the caller may see ``app_id`` (an admin limited to some apps gets
    404 for the others, as for an app that does not exist) and the app exists."""
    check = getattr(me, "check_app", None)
    if check is not None:
        check(app_id)
    if await apps.get_app(app_id) is None:
        raise NotFound("no such app")
