"""The retention job with fake collaborators: which apps, which messages, how often, and that
a run is idempotent (pipeline.retention)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from chatcluster.domain.ids import rfc3339
from chatcluster.domain.model import App, Message, MessageState
from chatcluster.pipeline.retention import RetentionJob, RetentionMetrics
from chatcluster.ports.admin import AppSettings

NOW = 1_800_000_000.0


def state(mid: str, age_s: float, app: str = "a1") -> MessageState:
    m = Message(id=mid, conversation_id="c", seq=1, sender_id="u", text="t",
                client_msg_id=mid, created_at=rfc3339(NOW - age_s))
    return MessageState(app_id=app, message=m, text_event_seq=1, last_event_seq=1)


class Fakes:
    def __init__(self) -> None:
        self.apps = [App(id=f"a{i}", name="n", secret_digest="d", created_at="x")
                     for i in range(3)]
        self.settings = {"a1": AppSettings(app_id="a1", message_retention_days=2),
                         "a2": AppSettings(app_id="a2")}
        self.messages = {"a1": [state("old", 3 * 86_400), state("new", 86_400)],
                         "a2": [state("kept", 9 * 86_400, "a2")]}
        self.removed: list[tuple[str, str]] = []
        self.asked: list[tuple[str, str]] = []

    async def list_apps(self, after: str | None, limit: int) -> list[App]:
        return [a for a in self.apps if a.id > (after or "")][:limit]

    async def get_app_settings(self, app_id: str) -> AppSettings | None:
        return self.settings.get(app_id)

    async def messages_created_before(self, app_id: str, before: str,
                                      limit: int) -> list[MessageState]:
        self.asked.append((app_id, before))
        return [s for s in self.messages.get(app_id, [])
                if s.message.created_at < before and not s.message.deleted][:limit]

    async def remove(self, s: MessageState, actor: str) -> Any:
        self.removed.append((s.message.id, actor))
        return s.message


def job(fakes: Fakes, registry: CollectorRegistry) -> RetentionJob:
    return RetentionJob(store=fakes, moderation=fakes, admin=fakes,  # type: ignore[arg-type]
                        removal=fakes, metrics=RetentionMetrics(registry),  # type: ignore[arg-type]
                        clock=lambda: NOW)


async def test_only_apps_with_a_retention_lose_only_older_messages_once() -> None:
    fakes, registry = Fakes(), CollectorRegistry()
    retention = job(fakes, registry)
    assert await retention.run_once() == 1
    assert fakes.removed == [("old", "retention")]
    assert fakes.asked == [("a1", rfc3339(NOW - 2 * 86_400))]  # a0 and a2 keep everything
    # Not yet tombstoned by the persist consumer: the next run does not remove it again.
    assert await retention.run_once() == 0
    assert fakes.removed == [("old", "retention")]
    assert registry.get_sample_value("chat_retention_messages_removed_total") == 1.0
