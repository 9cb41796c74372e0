"""LeaderLease: only one operator instance reconciles at a time.

A coordination.k8s.io/v1 Lease, as client-go's leader election uses it: the holder renews
``renewTime`` every ``renew_s``; another instance takes the Lease over only once it has not
been renewed for ``duration_s``. Every write carries the resourceVersion it read, so two
candidates can never both win: the API server refuses the second with 409 Conflict.
A holder that stops cleanly releases the Lease, so its successor starts at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chatcluster.adapters.kubernetes.api import ApiError, KubeApi, resource_path

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _format(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaderLease:
    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, *,
                 duration_s: int = 15, renew_s: float = 2.0,
                 on_change: Callable[[bool], None] = lambda _: None) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.renew_s = renew_s
        self.on_change = on_change
        self.leading = False
        self._renewed_at: datetime | None = None
        self._stopped = False

    @property
    def path(self) -> str:
        return resource_path("coordination.k8s.io/v1", "Lease", self.namespace, self.name)

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _format(_now())
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration_s,
                "acquireTime": acquired or now, "renewTime": now,
                "leaseTransitions": transitions}

    async def try_acquire_or_renew(self) -> bool:
        lease = await self.api.get(self.path)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(0, None)}
            await self.api.create(resource_path("coordination.k8s.io/v1", "Lease",
                                                self.namespace), body)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = _parse(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.duration_s)
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            lease["spec"] = self._spec(transitions, spec.get("acquireTime"))
        elif holder and renewed and _now() - renewed < timedelta(seconds=duration):
            return False  # someone else holds a fresh lease
        else:
            lease["spec"] = self._spec(transitions + 1, None)
        await self.api.replace(self.path, lease)  # 409 if someone else wrote first
        return True

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            log.info("%s leadership of lease %s/%s as %s",
                     "acquired" if leading else "lost", self.namespace, self.name,
                     self.identity)
            self.on_change(leading)

    async def run(self) -> None:
        logged_follow = False
        while not self._stopped:
            try:
                won = await self.try_acquire_or_renew()
                if won:
                    self._renewed_at = _now()
                elif not logged_follow:
                    log.info("standing by: another operator instance holds lease %s/%s",
                             self.namespace, self.name)
                logged_follow = not won
                self._set(won)
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                # Stop acting before another instance may take over (client-go's
                # renewDeadline): never two leaders, at the price of a pause.
                if self.leading and (self._renewed_at is None or _now() - self._renewed_at
                                     > timedelta(seconds=self.duration_s * 2 / 3)):
                    self._set(False)
            except Exception as exc:
                log.warning("lease %s/%s: %r", self.namespace, self.name, exc)
                if self.leading:
                    self._set(False)
            await asyncio.sleep(self.renew_s)

    async def release(self) -> None:
        """Give the lease up (on a clean stop) so that a successor needs no expiry wait.
        The instance does not compete again afterwards."""
        self._stopped = True
        if not self.leading:
            return
        self._set(False)
        try:
            lease = await self.api.get(self.path)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                await self.api.replace(self.path, lease)
        except Exception as exc:
            log.warning("could not release lease: %r", exc)
