"""Every registered address answers, and Consul knows whether MCP really works."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Bridge, http_status, mcp_initialize, wait_for


def test_every_mode_registers_an_address_that_answers_mcp(bridge: Bridge, tmp_path: Path) -> None:
    bridge.agent.start()
    bridge.run_mcp_standin("auto-proxy", tmp_path / "a")
    bridge.run_mcp_standin(
        "auto-published", tmp_path / "b", ports={"8080/tcp": ("127.0.0.1", None)}
    )
    bridge.run_mcp_standin("internal", tmp_path / "c", expose="internal")
    bridge.run_mcp_standin("proxy", tmp_path / "d", expose="proxy")
    expected = {
        "auto-proxy": "proxy",
        "auto-published": "published",
        "internal": "internal",
        "proxy": "proxy",
    }
    for name, mode in expected.items():
        svc = wait_for(f"{name} registered", lambda n=name: bridge.service(n))
        assert svc["Meta"]["expose"] == mode
        answer = mcp_initialize(f"http://{svc['Address']}:{svc['Port']}/cgi-bin/mcp")
        assert answer["serverInfo"]["name"] == "cgi-mcp"


def test_mcp_check_passes_puts_server_info_in_meta_and_fails_when_mcp_breaks(
    bridge: Bridge, tmp_path: Path
) -> None:
    bridge.agent.start()
    www = tmp_path / "www"
    bridge.run_mcp_standin("srv", www)
    check = wait_for(
        "check passing", lambda: (c := bridge.check("srv")) and c["Status"] == "passing" and c
    )
    assert "cgi-mcp" in check["Output"] and check["CheckID"].endswith(":mcp")
    svc = wait_for(
        "meta written",
        lambda: (s := bridge.service("srv")) and "mcp_server_name" in s["Meta"] and s,
    )
    assert svc["Meta"]["mcp_server_name"] == "cgi-mcp"
    assert svc["Meta"]["mcp_server_version"] == "1.2.3"
    assert svc["Meta"]["mcp_protocol_version"] == "2025-06-18"
    # Still accepts TCP and answers HTTP, but no longer speaks MCP.
    (www / "broken").touch()
    assert http_status(svc["Address"], svc["Port"], "/cgi-bin/mcp") == 200
    critical = wait_for(
        "check critical", lambda: (c := bridge.check("srv")) and c["Status"] == "critical" and c
    )
    assert "text/html" in critical["Output"]
    (www / "broken").unlink()
    wait_for("passing again", lambda: (c := bridge.check("srv")) and c["Status"] == "passing")
    status = bridge.agent.status()
    (managed,) = status["managed"]
    assert managed["check_status"] == "passing"
    assert managed["connections"]["total"] >= 3  # the probes went through the forwarder


def test_forwarder_follows_the_container_and_survives_agent_sigkill(
    bridge: Bridge, tmp_path: Path
) -> None:
    bridge.agent.start()
    container = bridge.run_mcp_standin("life", tmp_path / "www")
    svc = wait_for("registered", lambda: bridge.service("life"))
    port = svc["Port"]
    assert _answers(port)
    container.stop(timeout=1)
    wait_for("deregistered", lambda: bridge.service("life") is None)
    wait_for("listener closed", lambda: _refused(port))
    container.start()  # a new address, maybe: the forwarder must follow
    wait_for("registered again", lambda: bridge.service("life"))
    assert bridge.service("life")["Port"] == port  # type: ignore[index]
    wait_for("answers again", lambda: _answers(port))
    bridge.agent.kill()
    wait_for("listener gone with the agent", lambda: _refused(port))
    bridge.agent.start()
    wait_for("listener restored", lambda: _answers(port))


def _answers(port: int) -> bool:
    return http_status("127.0.0.1", port, "/cgi-bin/mcp") in (200, 202)


def _refused(port: int) -> bool:
    try:
        http_status("127.0.0.1", port, "/")
    except OSError:
        return True
    return False


def test_docker_check_mirrors_the_container_healthcheck(bridge: Bridge, tmp_path: Path) -> None:
    bridge.agent.start()
    flag = tmp_path / "flag"
    flag.mkdir()
    (flag / "ok").touch()
    bridge.run(
        "hc",
        labels=bridge.labels({"check.interval": "1s"}, enable="true", port="8080", check="docker"),
        volumes={str(flag): {"bind": "/flag", "mode": "ro"}},
        healthcheck={
            "test": ["CMD", "test", "-f", "/flag/ok"],
            "interval": 500_000_000,
            "timeout": 500_000_000,
            "retries": 1,
        },
    )
    wait_for("passing", lambda: (c := bridge.check("hc")) and c["Status"] == "passing")
    (flag / "ok").unlink()
    critical = wait_for(
        "critical", lambda: (c := bridge.check("hc")) and c["Status"] == "critical" and c
    )
    assert "unhealthy" in critical["Output"]


@pytest.mark.parametrize(("transport", "path"), [("streamable-http", "/mcp"), ("sse", "/sse")])
def test_real_mcp_server_on_the_official_sdk(
    bridge: Bridge, mcp_server_image: str, transport: str, path: str
) -> None:
    bridge.agent.start()
    bridge.docker.containers.run(
        mcp_server_image,
        name=bridge.tag + "real",
        detach=True,
        environment={"MCP_TRANSPORT": transport},
        labels=bridge.labels(
            {"check.interval": "2s", "check.timeout": "2s"},
            enable="true",
            port="8000",
            transport=transport,
            path=path,
        ),
    )
    check = wait_for(
        "MCP check passing",
        lambda: (c := bridge.check("real")) and c["Status"] == "passing" and c,
    )
    assert "fixture-mcp" in check["Output"]
    svc = wait_for(
        "server info in meta",
        lambda: (s := bridge.service("real")) and "mcp_server_name" in s["Meta"] and s,
    )
    assert svc["Meta"]["mcp_server_name"] == "fixture-mcp"
    assert svc["Meta"]["transport"] == transport
    assert svc["Meta"]["mcp_protocol_version"]
