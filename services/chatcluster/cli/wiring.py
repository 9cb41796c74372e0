"""Backends by URL (``--store``, ``--bus``, ``--cache`` or CHAT_STORE_URL, CHAT_BUS_URL,
CHAT_CACHE_URL), and the state directory's credentials."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from chatcluster.adapters.embedded.bus import SqliteBus
from chatcluster.adapters.embedded.fanout import SqliteFanout
from chatcluster.adapters.embedded.registry import SqliteRegistry
from chatcluster.adapters.embedded.sequencer import SqliteSequencer
from chatcluster.adapters.embedded.store import SqliteStore
from chatcluster.auth.tokens import ACCESS_TTL_S, REFRESH_TTL_S, TokenIssuer, new_secret
from chatcluster.domain.ids import new_id
from chatcluster.ports.bus import Bus
from chatcluster.ports.fanout import Fanout
from chatcluster.ports.registry import Registry
from chatcluster.ports.sequencer import Sequencer
from chatcluster.ports.store import Store

EMBEDDED = ("", "embedded")


class ConfigError(Exception):
    """A setting the user must fix; printed without a traceback."""


@dataclass
class BackendUrls:
    store: str = ""
    bus: str = ""
    cache: str = ""

    @classmethod
    def resolve(cls, store: str | None, bus: str | None, cache: str | None) -> BackendUrls:
        return cls(store=store if store is not None else os.environ.get("CHAT_STORE_URL", ""),
                   bus=bus if bus is not None else os.environ.get("CHAT_BUS_URL", ""),
                   cache=cache if cache is not None else os.environ.get("CHAT_CACHE_URL", ""))

    def check(self) -> None:
        for name, url in (("store", self.store), ("bus", self.bus), ("cache", self.cache)):
            if url not in EMBEDDED:
                scheme = url.partition("://")[0]
                raise ConfigError(
                    f"--{name} {url!r}: only the embedded backend is available in this version "
                    f"(the {scheme} adapter is planned); leave it unset or 'embedded'")


@dataclass
class Backends:
    store: Store
    sequencer: Sequencer
    bus: Bus
    fanout: Fanout
    registry: Registry

    async def close(self) -> None:
        for part in (self.fanout, self.bus, self.sequencer, self.registry, self.store):
            await part.close()


def open_backends(state_dir: Path, urls: BackendUrls) -> Backends:
    urls.check()
    data = state_dir / "data"
    return Backends(store=SqliteStore(data), sequencer=SqliteSequencer(data),
                    bus=SqliteBus(data), fanout=SqliteFanout(data),
                    registry=SqliteRegistry(data))


@dataclass
class Credentials:
    jwt_secret: str
    admin_token: str
    app_id: str
    app_secret: str

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Credentials:
        """The cluster's secrets, made on first start and kept (mode 0600) across restarts."""
        path = state_dir / "credentials.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        creds = cls(jwt_secret=secrets.token_urlsafe(48), admin_token=secrets.token_urlsafe(32),
                    app_id=new_id("app"), app_secret=new_secret())
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds.__dict__, f)
        os.replace(tmp, path)
        return creds

    @classmethod
    def load(cls, state_dir: Path) -> Credentials:
        path = state_dir / "credentials.json"
        if not path.exists():
            raise ConfigError(f"{path} is missing: start the cluster with 'chatcluster up' "
                              f"or point --state-dir at its state directory")
        return cls(**json.loads(path.read_text()))


def token_issuer(creds: Credentials) -> TokenIssuer:
    return TokenIssuer(
        os.environ.get("CHAT_JWT_SECRET") or creds.jwt_secret,
        access_ttl=int(os.environ.get("CHAT_ACCESS_TTL_S", str(ACCESS_TTL_S))),
        refresh_ttl=int(os.environ.get("CHAT_REFRESH_TTL_S", str(REFRESH_TTL_S))))
