"""dockerd restarted in the middle of a burst; the Docker socket unreadable."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import SERVICES, Bridge, wait_for
from tests.integration.world import settle


@pytest.mark.slow
def test_dockerd_restarted_mid_burst(bridge: Bridge) -> None:
    bridge.agent.start()
    names = [f"d{i}" for i in range(30)]
    # Half come back after the engine restarts (restart policy), half stay down.
    errors: list[BaseException] = []

    def burst() -> None:
        for i, name in enumerate(names):
            try:
                policy = {"Name": "always"} if i % 2 == 0 else None
                bridge.run(name, restart_policy=policy) if policy else bridge.run(name)
            except Exception as exc:  # the engine went away under us: expected for some
                errors.append(exc)

    starter = threading.Thread(target=burst)
    starter.start()
    wait_for("burst under way", lambda: len(bridge.services()) >= 6)
    subprocess.run([str(SERVICES), "dockerd-restart"], check=True, capture_output=True)
    starter.join()
    wait_for("reconnected", lambda: len(bridge.agent.events("docker_connected")) >= 2)
    running = [
        c
        for c in bridge.docker.containers.list(filters={"name": bridge.tag})
        if c.status == "running"
    ]
    ports = settle(bridge, len(running), "after the engine restart")
    assert len(ports) == len(running)
    bridge.run("newcomer")
    settle(bridge, len(running) + 1)


class _SocketRelay:
    """A unix socket in front of the real Docker socket, whose mode the test controls."""

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[_SocketRelay]:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), host
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir()
    sock_dir.chmod(0o755)
    r = _SocketRelay(sock_dir / "docker.sock", host.removeprefix("unix://"))
    yield r
    r.close()


# Root reads any socket whatever its mode; without these two capabilities it obeys the mode.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.slow
def test_docker_socket_unreadable_then_readable(bridge: Bridge, relay: _SocketRelay) -> None:
    relay.path.chmod(0o000)
    bridge.agent.env["DOCKER_HOST"] = f"unix://{relay.path}"
    bridge.run("early")
    bridge.agent.start(wait_ready=False, prefix=NO_DAC)
    # A fresh store waits to be rebuilt from Docker; either way the agent says why.
    said = wait_for(
        "a clear Docker error",
        lambda: (
            bridge.agent.events("state_rebuild_waiting") + bridge.agent.events("docker_unreachable")
        ),
    )
    assert "Permission denied" in str(said[-1]["error"]), said[-1]
    assert not bridge.agent.ready()
    assert bridge.services() == {}
    relay.path.chmod(0o600)  # readable (for its owner, root) again
    wait_for("ready", bridge.agent.ready, timeout=120)
    settle(bridge, 1)
