"""ObjectCache: the operator's children as last seen, fed by the watches.

With it a reconcile compares the rendered children against memory instead of GETting each
one: a steady-state pass makes no request but the ChatCluster's GET (and its Secret's), which
is what lets one process keep a hundred clusters in line. A stale entry costs at most one
server-side apply that changes nothing, and the watch event that follows triggers another
pass; an object edited by hand arrives as an event and is compared again.

Entries only move forward: an older resourceVersion (a late listing) never replaces a newer
one (an apply's answer).
"""

from __future__ import annotations

from typing import Any

CacheKey = tuple[str, str, str]  # (kind, namespace, name)


def _version(obj: dict[str, Any]) -> int:
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
    return int(rv) if rv.isdigit() else 0


class ObjectCache:
    def __init__(self) -> None:
        self._objects: dict[CacheKey, dict[str, Any]] = {}
        self._deleted: dict[CacheKey, int] = {}

    @staticmethod
    def key(obj: dict[str, Any], kind: str | None = None) -> CacheKey:
        meta = obj["metadata"]
        return (kind or obj["kind"], meta.get("namespace") or "", meta["name"])

    def put(self, obj: dict[str, Any], kind: str | None = None) -> None:
        key = self.key(obj, kind)
        seen = self._objects.get(key)
        version = _version(obj)
        if seen is not None and _version(seen) > version:
            return
        if self._deleted.get(key, -1) >= version:
            return
        self._deleted.pop(key, None)
        self._objects[key] = obj

    def delete(self, obj: dict[str, Any], kind: str | None = None) -> None:
        key = self.key(obj, kind)
        self._objects.pop(key, None)
        self._deleted[key] = _version(obj)

    def forget(self, key: CacheKey) -> None:
        """Drop an entry without a tombstone (after our own DELETE)."""
        self._objects.pop(key, None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((kind, namespace, name))

    def select(self, kind: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for (k, ns, _), obj in self._objects.items():
            if k == kind and ns == namespace:
                have = (obj.get("metadata") or {}).get("labels") or {}
                if all(have.get(a) == b for a, b in labels.items()):
                    out.append(obj)
        return out

    def __len__(self) -> int:
        return len(self._objects)
