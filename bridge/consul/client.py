"""Consul, behind a thin adapter (py-consul, the maintained fork of python-consul2).

It registers, deregisters and reports TTL checks, and reads what it needs back.

It only ever lists, changes or removes services whose meta says managed_by=mcp-bridge and
bridge_node=<our node id>: anything else in Consul is not ours to touch. Calls retry a few
times with backoff for passing faults; a fault that outlasts that is raised, and the
agent's next pass tries again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import consul
import consul.aio
import consul.exceptions
import structlog
from consul.callback import CB
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from bridge.consul.http import (
    FAULTS,
    REJECTIONS,
    TLS_FAULTS,
    PyConsul,
    RateLimited,
    explain,
    is_passing_fault,
)
from bridge.core.config import Settings
from bridge.core.model import MANAGED_BY, KVEntry, Registration, parse_service_id
from bridge.core.protocols import ConsulRejected, ConsulUnavailable

T = TypeVar("T")
log = structlog.get_logger("bridge.consul")


class ConsulClient:
    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        token: str | None = None,
        cacert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        kv_prefix: str = "mcp-bridge",
        timeout: float = 10.0,
        connections: int | None = None,
        attempts: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`attempts`: tries per request (Consul's 429 included); `sleep` and `clock` wait
        between them and tell the time of a 429's Retry-After (a test's fakes)."""
        self.url = url
        self.node_id = node_id
        self.kv_prefix = kv_prefix
        self._token = token
        self._cacert = cacert
        self._cert = (client_cert, client_key) if client_cert and client_key else client_cert
        self._cert_file = client_cert
        self._not_before = 0.0  # monotonic time before which nothing is sent (429)
        self._timeout = timeout
        self._connections = connections  # at once (aiohttp's default: 100)
        self._attempts = attempts
        self._sleep = sleep
        self._clock = clock
        self._client: consul.aio.Consul | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ConsulClient:
        """With Consul's own CONSUL_HTTP_TOKEN / CONSUL_CACERT / client cert settings."""

        def text(path: Path | None) -> str | None:
            return str(path) if path else None

        return cls(
            settings.consul_url,
            settings.node_id,
            token=settings.consul_http_token,
            cacert=text(settings.consul_cacert),
            client_cert=text(settings.consul_client_cert),
            client_key=text(settings.consul_client_key),
            kv_prefix=settings.kv_prefix,
            **options,
        )

    def _consul(self) -> consul.aio.Consul:
        # Created lazily inside the running loop: py-consul's aio session binds to it.
        if self._client is None:
            parts = urlsplit(self.url)
            scheme = parts.scheme
            self._client = PyConsul(
                host=parts.hostname,
                port=parts.port or (443 if scheme == "https" else 80),
                scheme=scheme,
                token=self._token,
                verify=self._cacert or True,
                cert=self._cert,
                connections_timeout=self._timeout,
                connections_limit=self._connections,
            )
        return self._client

    async def _call(self, what: str, make: Callable[[consul.aio.Consul], Awaitable[T]]) -> T:
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=0.1, max=1.0),
                retry=retry_if_exception(is_passing_fault),
                sleep=self._sleep,
                reraise=True,
            ):
                with attempt:
                    return await self._send(make)
        except REJECTIONS as exc:
            raise ConsulRejected(
                f"{what}: Consul refused it: {explain(exc, self._cert_file)}"
            ) from exc
        except FAULTS as exc:
            # (Not for a timeout: a blocking query that outlived its wait says nothing of
            # the connection, and closing would abort every other query under way.)
            if isinstance(exc, (*TLS_FAULTS, OSError)) and not isinstance(exc, TimeoutError):
                # Drop the client: the next call reads the TLS files again, so a fixed
                # certificate needs no restart.
                await self.close()
            raise ConsulUnavailable(
                f"{what} at {self.url}: {explain(exc, self._cert_file)}"
            ) from exc
        except (KeyError, ValueError) as exc:  # no X-Consul-Index, a body that is not JSON
            raise ConsulUnavailable(f"{what} at {self.url}: unexpected answer: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def _send(self, make: Callable[[consul.aio.Consul], Awaitable[T]]) -> T:
        """One request, after any quiet time Consul asked for: a 429's Retry-After holds
        every request of this client, not only the one that got it (the others would get
        a 429 too, and prolong the overload). Looked at again after each wait: another
        request's 429 may have made the quiet time longer meanwhile."""
        while (quiet := self._not_before - self._clock()) > 0:
            await self._sleep(quiet)
        try:
            return await make(self._consul())
        except RateLimited as exc:
            if exc.retry_after is not None:
                until = self._clock() + exc.retry_after
                self._not_before = max(self._not_before, until)
            raise

    async def leader(self) -> str:
        return str(await self._call("status/leader", lambda c: c.status.leader()))

    def _own_id(self, sid: str) -> bool:
        try:
            return parse_service_id(sid)[0] == self.node_id
        except ValueError:
            return False

    def is_ours(self, service: Mapping[str, Any]) -> bool:
        meta = service.get("Meta") or {}
        return meta.get("managed_by") == MANAGED_BY and meta.get("bridge_node") == self.node_id

    async def own_services(self) -> dict[str, Registration]:
        services: Mapping[str, Mapping[str, Any]] = await self._call(
            "agent/services", lambda c: c.agent.services()
        )
        return {
            sid: Registration(
                service_id=sid,
                name=str(s.get("Service", "")),
                address=str(s.get("Address", "")),
                port=int(s.get("Port") or 0),
                tags=tuple(s.get("Tags") or ()),
                meta=dict(s.get("Meta") or {}),
            )
            for sid, s in services.items()
            if self.is_ours(s)
        }

    async def checks(self) -> dict[str, Mapping[str, Any]]:
        """Our services' checks, by check id (status, output, service id)."""
        checks: Mapping[str, Mapping[str, Any]] = await self._call(
            "agent/checks", lambda c: c.agent.checks()
        )
        return {cid: c for cid, c in checks.items() if self._own_id(str(c.get("ServiceID", "")))}

    async def register(self, reg: Registration) -> None:
        if reg.meta.get("managed_by") != MANAGED_BY or reg.meta.get("bridge_node") != self.node_id:
            raise ValueError(f"refusing to register {reg.service_id} without our meta")
        checks = [dict(c) for c in reg.checks]
        await self._call(
            f"register {reg.service_id}",
            lambda c: c.agent.service.register(
                name=reg.name,
                service_id=reg.service_id,
                address=reg.address,
                port=reg.port,
                tags=list(reg.tags),
                meta=dict(reg.meta),
                check=checks[0] if checks else None,
                extra_checks=checks[1:],
                # Checks not in this request are dropped: a changed check kind leaves no
                # stale check behind.
                replace_existing_checks=True,
            ),
        )

    async def deregister(self, service_id: str) -> None:
        if not self._own_id(service_id):
            raise ValueError(f"refusing to deregister {service_id}: not ours")
        await self._call(
            f"deregister {service_id}", lambda c: c.agent.service.deregister(service_id)
        )

    async def update_ttl(self, check_id: str, status: str, output: str) -> None:
        """Report a TTL check: status is passing, warning or critical."""
        note = output[:1000]

        def send(c: consul.aio.Consul) -> Awaitable[Any]:
            check = c.agent.check
            report = {"passing": check.ttl_pass, "warning": check.ttl_warn}.get(
                status, check.ttl_fail
            )
            result: Awaitable[Any] = report(check_id, note)
            return result

        await self._call(f"check {check_id}", send)

    # ---- KV, under the bridge's own prefix only --------------------------------------

    def _own_key(self, key: str) -> str:
        """Ours to write: `<prefix>/<node id>/…`, and the fleet's port registry
        `<prefix>/ports/…`, which every bridge of the fleet shares (cluster scope)."""
        own = (f"{self.kv_prefix}/{self.node_id}/", f"{self.kv_prefix}/ports/")
        if not key.startswith(own):
            raise ValueError(f"refusing to touch KV key {key}: not under our prefix")
        return key

    async def kv_read(self, prefix: str) -> list[KVEntry]:
        """Every key under `prefix`, with its value, ModifyIndex and lock session."""
        _, items = await self._call(f"kv read {prefix}", lambda c: c.kv.get(prefix, recurse=True))
        return [
            KVEntry(
                str(i["Key"]),
                i.get("Value") or b"",
                int(i.get("ModifyIndex") or 0),
                i.get("Session"),
            )
            for i in items or ()
        ]

    async def kv_txn(self, ops: Sequence[Mapping[str, Any]]) -> bool:
        """Apply KV operations atomically (/v1/txn): True when committed, False when a
        check-and-set or lock in it failed (someone else got there first)."""
        for op in ops:
            kv = op["KV"]
            if kv["Verb"] not in ("get", "check-index", "check-not-exists", "check-session"):
                self._own_key(str(kv["Key"]))

        async def send(c: consul.aio.Consul) -> bool:
            try:
                # Not c.txn.put: py-consul (1.8.0) sends no ACL token with it, and with
                # ACLs on every operation then fails as "Permission denied".
                await c.http.put(
                    CB.json(), "/v1/txn", data=json.dumps(list(ops)), headers=c.prepare_headers()
                )
            except consul.exceptions.ClientError as exc:
                if str(exc).startswith("409") and "Permission denied" not in str(exc):
                    return False  # a check-and-set or a lock lost, not a refusal
                raise
            return True

        return await self._call("txn", send)

    async def session_create(self, name: str, ttl: int) -> str:
        """A session on our agent's node, invalidated when the node fails or when it is not
        renewed within `ttl` seconds; its locks are then deleted (ephemeral keys)."""
        sid = await self._call(
            "session create",
            lambda c: c.session.create(name=name, ttl=ttl, behavior="delete", lock_delay=0),
        )
        return str(sid)

    async def session_renew(self, session: str) -> bool:
        """False when the session is gone (expired or invalidated)."""

        async def renew(c: consul.aio.Consul) -> bool:
            try:
                return bool(await c.session.renew(session))
            except consul.exceptions.NotFound:
                return False

        return await self._call("session renew", renew)

    async def session_destroy(self, session: str) -> None:
        await self._call("session destroy", lambda c: c.session.destroy(session))

    async def kv_put(self, key: str, value: bytes) -> None:
        key = self._own_key(key)
        done = await self._call(f"kv put {key}", lambda c: c.kv.put(key, value))
        if done is not True:
            raise ConsulRejected(f"kv put {key}: Consul answered {done!r}")

    async def kv_delete(self, key: str, *, recurse: bool = False) -> None:
        key = self._own_key(key)
        await self._call(f"kv delete {key}", lambda c: c.kv.delete(key, recurse=recurse or None))

    async def kv_keys(self, prefix: str) -> list[str]:
        """The keys under `prefix` (anyone's: reads are not restricted)."""
        _, keys = await self._call(f"kv keys {prefix}", lambda c: c.kv.get(prefix, keys=True))
        return [str(k) for k in keys or ()]

    async def kv_get(self, key: str) -> bytes | None:
        _, item = await self._call(f"kv get {key}", lambda c: c.kv.get(key))
        value = item.get("Value") if isinstance(item, dict) else None
        return value if isinstance(value, bytes) else None

    # ---- the catalog, for `mcp-bridge services` (all nodes) ----------------------------

    async def catalog_services(self) -> dict[str, list[str]]:
        """Service name -> tags, in the whole datacenter."""
        _, services = await self._call("catalog/services", lambda c: c.catalog.services())
        return {str(name): list(tags or ()) for name, tags in (services or {}).items()}

    async def health_service(self, name: str) -> list[Mapping[str, Any]]:
        """Every instance of `name` with its node and checks (/v1/health/service)."""
        _, entries = await self._call(f"health/service/{name}", lambda c: c.health.service(name))
        return list(entries or ())

    # ---- blocking queries, for the gateway: (index, what) when it changed or `wait` ran out

    async def watch_services(self, index: int, wait: str) -> tuple[int, dict[str, list[str]]]:
        new, services = await self._call(
            "catalog/services", lambda c: c.catalog.services(index=_index(index), wait=wait)
        )
        return int(new), {str(n): list(tags or ()) for n, tags in (services or {}).items()}

    async def watch_health(
        self, name: str, index: int, wait: str
    ) -> tuple[int, list[Mapping[str, Any]]]:
        new, entries = await self._call(
            f"health/service/{name}",
            lambda c: c.health.service(name, index=_index(index), wait=wait),
        )
        return int(new), list(entries or ())

    async def watch_kv(self, prefix: str, index: int, wait: str) -> tuple[int, list[KVEntry]]:
        new, items = await self._call(
            f"kv {prefix}",
            lambda c: c.kv.get(prefix, index=_index(index), wait=wait, recurse=True),
        )
        entries = [
            KVEntry(str(i["Key"]), i.get("Value") or b"", int(i.get("ModifyIndex", 0)))
            for i in items or ()
        ]
        return int(new), entries

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _index(index: int) -> str | None:
    """0: no index yet, an answer at once."""
    return str(index) if index > 0 else None
