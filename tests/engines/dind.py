"""Docker engines of several versions, and rootful Podman serving Docker's API, each in a
container started with testcontainers from the local mcp-bridge/dind:<suite> and
mcp-bridge/podman:<suite> images (Ryuk off: its image cannot be pulled; every container
carries the test label, and the session's clean-up removes it).

The engine's API is published on a loopback port of the host, so DOCKER_HOST stays the
same when the engine restarts.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import requests
from testcontainers.core.container import DockerContainer

from tests.integration.conftest import IMAGE, TEST_LABEL, free_tcp_port

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

SUITES = {"bookworm": "20.10", "trixie": "26.1", "sid": "28.5"}  # suite -> engine line
# Podman's Docker-compatible API: `podman system service`, rootful, no systemd
PODMAN = {"podman-bookworm": "4.3", "podman-trixie": "5.4"}
# What --privileged would give, less CAP_SYS_RESOURCE, which the host's bounding set may
# lack (then Docker 20.10 refuses --privileged): as compose/dind/compose.ci.yaml.
CAPABILITIES: dict[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
    # IPv6 on in the engine's own namespace, so ports can be published on IPv6 too
    "sysctls": {"net.ipv6.conf.all.disable_ipv6": "0"},
}


class Engine:
    """One inner engine; `url` is its DOCKER_HOST, `client` an SDK client for it."""

    def __init__(self, suite: str, tls_dir: Path | None = None) -> None:
        self.suite = suite
        self.podman = suite in PODMAN
        self.port = free_tcp_port()
        api = 2376 if tls_dir else 2375
        image = f"mcp-bridge/podman:{suite[7:]}" if self.podman else f"mcp-bridge/dind:{suite}"
        self.container = DockerContainer(image).with_kwargs(
            labels={TEST_LABEL: "1", "mcp-bridge-test-engine": suite}, **CAPABILITIES
        )
        self.container.ports[f"{api}/tcp"] = ("127.0.0.1", self.port)  # type: ignore[assignment]
        if tls_dir is not None:
            self.container.with_volume_mapping(str(tls_dir), "/certs", "ro")
            self.container.with_env("DIND_TLS_DIR", "/certs")
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.client: docker.DockerClient | None = None

    def start(self, tls: docker.tls.TLSConfig | None = None) -> Engine:
        self.container.start()
        self.client = self.wait_up(tls)
        return self

    def wait_up(self, tls: docker.tls.TLSConfig | None = None, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                # An explicit version: `auto` would ask before trust_env is off, and
                # REQUESTS_CA_BUNDLE must not replace the test's CA.
                client = docker.DockerClient(
                    base_url=self.url, tls=tls or False, timeout=30, version="1.41"
                )
                client.api.trust_env = False
                client.version()
                return client
            except (docker.errors.DockerException, requests.RequestException) as exc:
                last = exc
                time.sleep(0.3)
        logs = b"\n".join(self.container.get_logs()).decode(errors="replace")[-3000:]
        raise AssertionError(f"dind:{self.suite} not up in {timeout:g}s: {last}\n{logs}")

    @property
    def version(self) -> dict[str, Any]:
        assert self.client is not None
        return dict(self.client.version())

    def load(self, outer: docker.DockerClient, image: str = IMAGE) -> None:
        """Copy an image of the host's engine into this one (no registry here)."""
        assert self.client is not None
        data = b"".join(outer.images.get(image).save(named=True))
        self.client.images.load(data)

    def run_healthchecks(self, container_id: str) -> None:
        """Podman runs a container's healthcheck from a systemd timer, and there is no
        systemd here: run it by hand, as that timer would. Docker runs its own."""
        if self.podman:
            wrapped = self.container.get_wrapped_container()
            wrapped.exec_run(["podman", "healthcheck", "run", container_id])

    def restart(self) -> None:
        """Stop and start the engine's container: its containers stop, its state stays."""
        wrapped = self.container.get_wrapped_container()
        wrapped.restart(timeout=10)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        with contextlib.suppress(docker.errors.DockerException):
            self.container.stop()


@contextlib.contextmanager
def running(suite: str, outer: docker.DockerClient, **kwargs: Any) -> Iterator[Engine]:
    engine = Engine(suite, **kwargs)
    try:
        engine.start()
        engine.load(outer)
        yield engine
    finally:
        engine.stop()
