"""UsageStore on a MongoDB-protocol server; mirrors ``embedded.usage``.

A counted key is a document whose ``_id`` is the whole key, so recording it twice is a skipped
duplicate; a day's peak is one document raised with ``$max``. Totals are counted when asked
(one ``find`` of the range, projected to two fields), which keeps writes single-document.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from chatcluster.ports.usage import COUNTED, DailyUsage, UsageKey

from .collections import Doc, MongoCollections
from .store import pair_id


def _key_id(k: UsageKey) -> str:
    return pair_id(k.app_id, pair_id(k.day, pair_id(k.metric, k.key)))


class MongoUsageStore(MongoCollections):
    INDEXES = {
        "usage_keys": [IndexModel([("app_id", ASCENDING), ("day", ASCENDING)],
                                  name="usage_by_day")],
        "usage_peaks": [],
    }

    def __init__(self, url: str, database: str | None = None, **client_options: Any) -> None:
        super().__init__(url, database, **client_options)
        self.keys = self.db["usage_keys"]
        self.peaks = self.db["usage_peaks"]

    async def record(self, keys: list[UsageKey]) -> list[UsageKey]:
        unique = list(dict.fromkeys(keys))
        docs: list[Doc] = [{"_id": _key_id(k), "app_id": k.app_id, "day": k.day,
                            "metric": k.metric} for k in unique]
        async with self._op():
            skipped = await self._insert_new(self.keys, docs)
        return [k for i, k in enumerate(unique) if i not in skipped]

    async def record_peak(self, app_id: str, day: str, connections: int) -> None:
        async with self._op():
            try:
                await self.peaks.update_one(
                    {"_id": pair_id(app_id, day)},
                    {"$max": {"connections": connections},
                     "$setOnInsert": {"app_id": app_id, "day": day}}, upsert=True)
            except DuplicateKeyError:  # two first samples raced: the other inserted, retry
                await self.peaks.update_one({"_id": pair_id(app_id, day)},
                                            {"$max": {"connections": connections}})

    async def daily(self, app_id: str, first_day: str, last_day: str) -> list[DailyUsage]:
        days: dict[str, DailyUsage] = {}
        span = {"app_id": app_id, "day": {"$gte": first_day, "$lte": last_day}}
        async with self._op():
            counts = Counter[tuple[str, str]]()
            async for doc in self.keys.find(span, {"day": 1, "metric": 1, "_id": 0}):
                counts[(doc["day"], doc["metric"])] += 1
            peaks = await self.peaks.find(span).to_list()
        for (day, metric), n in counts.items():
            if metric in COUNTED:
                setattr(days.setdefault(day, DailyUsage(day=day)), metric, n)
        for doc in peaks:
            days.setdefault(doc["day"], DailyUsage(day=doc["day"])).peak_connections = int(
                doc["connections"])
        return [days[d] for d in sorted(days)]
