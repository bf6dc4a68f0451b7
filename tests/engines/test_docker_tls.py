"""Docker over TLS: an engine served with --tlsverify and a CA this test makes; the agent
with DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH; a wrong CA and a missing client
certificate each give one clear error, doctor says it too, nothing in Consul is removed,
and fixing the files is enough: no restart. The stdio attach reaches the same engine over
the same TLS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from bridge.docker.endpoint import endpoint_from_env
from tests.engines.dind import Engine
from tests.integration.conftest import (
    IMAGE,
    TEST_LABEL,
    Bridge,
    bridge_world,
    build_image,
    wait_for,
)
from tests.integration.test_attach import ECHO, round_trip
from tests.pki import Authority


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("docker-tls")
    good, wrong = Authority(root / "ca", "ca"), Authority(root / "other-ca", "other")
    server_dir, client_dir = root / "server", root / "client"
    for d in (server_dir, client_dir):
        d.mkdir()
    server = good.issue("server", server=True)
    shutil.copy(good.pem, server_dir / "ca.pem")
    shutil.copy(server.cert, server_dir / "server-cert.pem")
    shutil.copy(server.key, server_dir / "server-key.pem")
    client = good.issue("client", server=False)
    shutil.copy(good.pem, client_dir / "ca.pem")
    shutil.copy(client.cert, client_dir / "cert.pem")
    shutil.copy(client.key, client_dir / "key.pem")
    return {"server": server_dir, "client": client_dir, "wrong_ca": wrong.pem}


@pytest.fixture(scope="module")
def engine(certs: dict[str, Path], docker_client: docker.DockerClient) -> Iterator[Engine]:
    build_image("dind-sid")
    client = certs["client"]
    tls = docker.tls.TLSConfig(
        client_cert=(str(client / "cert.pem"), str(client / "key.pem")),
        ca_cert=str(client / "ca.pem"),
        verify=True,
    )
    started = Engine("sid", tls_dir=certs["server"])
    try:
        started.start(tls)
        started.load(docker_client)
        yield started
    finally:
        started.stop()


@pytest.fixture
def world(
    engine: Engine, certs: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Bridge]:
    cert_path = tmp_path / "docker-certs"  # this test's copy: it breaks and mends it
    shutil.copytree(certs["client"], cert_path)
    env = {"DOCKER_HOST": engine.url, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}
    assert engine.client is not None
    with bridge_world(engine.client, tmp_path, request, env) as bridge:
        yield bridge


def doctor(world: Bridge) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, **world.agent.env},
        timeout=60,
    )


RETRIES = 3  # the agent's retries a misconfiguration must outlast, not only its first


def start_unreachable(world: Bridge, words: str) -> dict[str, object]:
    """Start the agent and wait until it has retried RETRIES times: every
    docker_unreachable event of this start says `words`, on one line; the last one."""
    earlier = len(world.agent.events("docker_unreachable"))  # the log outlives a restart

    def retried() -> list[dict[str, object]] | None:
        said = world.agent.events("docker_unreachable")[earlier:]
        return said if len(said) >= RETRIES else None

    world.agent.start(wait_ready=False)
    said = wait_for(f"{RETRIES} retries with a clear Docker error", retried)
    assert all(words in str(e["error"]) for e in said), [e["error"] for e in said]
    assert all("\n" not in str(e["error"]) for e in said), said[-1]
    assert [e["attempt"] for e in said[:RETRIES]] == list(range(1, RETRIES + 1)), said
    return dict(said[-1])


def test_tls_works_and_a_wrong_ca_or_missing_certificate_says_why(
    world: Bridge, certs: dict[str, Path], engine: Engine
) -> None:
    cert_path = Path(world.agent.env["DOCKER_CERT_PATH"])
    world.agent.start()
    world.run("a", labels=world.labels(enable="true", port="8080", check="none"))
    sid = wait_for("registered over TLS", lambda: world.service("a"))["ID"]
    # Whatever sid ships today (28.5 when written): what the engine says it is.
    version = str(engine.version["Version"])
    assert f" answers: Docker Engine {version} (API " in doctor(world).stdout, version
    world.agent.stop()

    # A CA that did not sign the engine's certificate.
    good_ca = (cert_path / "ca.pem").read_bytes()
    shutil.copy(certs["wrong_ca"], cert_path / "ca.pem")
    said = start_unreachable(world, "CERTIFICATE_VERIFY_FAILED")
    assert "tcp://127.0.0.1" in str(said["error"])
    checked = doctor(world)
    assert checked.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in checked.stdout
    assert world.service("a") is not None, "a registration went while Docker was unreadable"
    assert world.agent.proc is not None and world.agent.proc.poll() is None, "the agent exited"
    (cert_path / "ca.pem").write_bytes(good_ca)  # mended: no restart needed
    wait_for("ready again", world.agent.ready)
    world.run("b", labels=world.labels(enable="true", port="8080", check="none"))
    wait_for("a new container registered", lambda: world.service("b"))
    assert world.service("a")["ID"] == sid  # type: ignore[index]
    world.agent.stop()

    # No client certificate at all.
    kept = {name: (cert_path / name).read_bytes() for name in ("cert.pem", "key.pem")}
    for name in kept:
        (cert_path / name).unlink()
    # docs/operations.md, "Docker over TLS": one line, in the log and from doctor alike.
    line = f"DOCKER_TLS_VERIFY is set and DOCKER_CERT_PATH {cert_path} has no cert.pem, key.pem"
    start_unreachable(world, line)
    checked = doctor(world)
    docker_said = [f for f in checked.stdout.splitlines() if f.startswith("FAIL  docker: ")]
    assert checked.returncode != 0 and len(docker_said) == 1, checked.stdout
    assert line in docker_said[0], checked.stdout
    assert world.service("a") is not None and world.service("b") is not None
    assert world.agent.proc is not None and world.agent.proc.poll() is None, "the agent exited"
    for name, data in kept.items():
        (cert_path / name).write_bytes(data)
    wait_for("ready again", world.agent.ready)


async def test_attach_over_tls_to_an_engine_with_tlsverify(
    engine: Engine, certs: dict[str, Path]
) -> None:
    """The stdio attach on the same DOCKER_HOST and TLS files the SDK reads (an asyncio
    connection, not the SDK's blocking socket): stdin in, stdout and stderr apart."""
    assert engine.client is not None
    echo = engine.client.containers.run(
        IMAGE, ECHO, stdin_open=True, detach=True, labels={TEST_LABEL: "1"}
    )
    try:
        env = {
            "DOCKER_HOST": engine.url,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(certs["client"]),
        }
        endpoint = endpoint_from_env(env)
        assert str(endpoint).startswith("https://127.0.0.1:")
        out, err = await round_trip(endpoint, echo.id, b"over tls")
        assert (out, err) == (b"over tls\n", b"err over tls\n")
    finally:
        echo.remove(force=True)
