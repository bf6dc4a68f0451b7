"""Settings: every contract variable, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.config import ExposeMode, SettingsError, load_settings
from bridge.core.durations import DurationError, format_duration, parse_duration
from bridge.core.model import PortRange


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings tests start from nothing, whatever the shell running them exports."""
    import os

    for key in list(os.environ):
        if key.startswith(("BRIDGE_", "CONSUL_")) or key == "DOCKER_HOST":
            monkeypatch.delenv(key)


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.consul_url == "http://127.0.0.1:8500"
    assert s.port_range == PortRange(11100, 11999)
    assert s.state_file == Path("/var/lib/mcp-bridge/state.db")
    assert s.resync_interval == 30
    assert s.stale_after == 600 and s.deregister_after == 600
    assert s.expose is ExposeMode.AUTO
    assert s.name_pattern.pattern == "^mcp-"
    assert s.label_prefix == "mcp."
    assert s.http_addr == "127.0.0.1:9105"
    assert s.listen_address == "0.0.0.0"


def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "BRIDGE_CONSUL_URL": "https://consul.example:8501/",
        "CONSUL_HTTP_TOKEN": "secret",
        "CONSUL_CACERT": "/ca.pem",
        "CONSUL_CLIENT_CERT": "/c.pem",
        "CONSUL_CLIENT_KEY": "/k.pem",
        "DOCKER_HOST": "tcp://127.0.0.1:2375",
        "BRIDGE_NODE_ID": "laptop-1",
        "BRIDGE_ADVERTISE_ADDRESS": "192.0.2.7",
        "BRIDGE_PORT_RANGE": "20000-20099",
        "BRIDGE_RESERVED_PORTS": "20000, 20010-20012",
        "BRIDGE_STATE_FILE": str(tmp_path / "s.db"),
        "BRIDGE_RESYNC_INTERVAL": "1m30s",
        "BRIDGE_STALE_AFTER": "500ms",
        "BRIDGE_DEREGISTER_AFTER": "2h",
        "BRIDGE_EXPOSE": "internal",
        "BRIDGE_NAME_PATTERN": "^srv-",
        "BRIDGE_LABEL_PREFIX": "io.mcp.",
        "BRIDGE_NETWORK": "backend",
        "BRIDGE_LISTEN_ADDRESS": "127.0.0.1",
        "BRIDGE_HTTP_ADDR": "0.0.0.0:9999",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_LOG_LEVEL": "debug",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.consul_url == "https://consul.example:8501"
    assert s.consul_http_token == "secret"
    assert s.consul_cacert == Path("/ca.pem")
    assert s.docker_host == "tcp://127.0.0.1:2375"
    assert s.node_id == "laptop-1" and s.advertise_address == "192.0.2.7"
    assert s.port_range == PortRange(20000, 20099)
    assert s.reserved_ports == {20000, 20010, 20011, 20012}
    assert (s.resync_interval, s.stale_after, s.deregister_after) == (90, 0.5, 7200)
    assert s.expose is ExposeMode.INTERNAL and s.name_pattern.pattern == "^srv-"
    assert s.label_prefix == "io.mcp." and s.network == "backend"
    assert s.http_host_port == ("0.0.0.0", 9999)
    assert s.log_format == "json" and s.log_level == "debug"


def test_env_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "bridge.env"
    env_file.write_text("BRIDGE_NODE_ID=from-file\nBRIDGE_EXPOSE=proxy\n")
    monkeypatch.setenv("BRIDGE_EXPOSE", "internal")
    s = load_settings(env_file)
    assert s.node_id == "from-file" and s.expose is ExposeMode.INTERNAL


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("BRIDGE_PORT_RANGE", "9000-100", "LOW <= HIGH"),
        ("BRIDGE_PORT_RANGE", "11100", "LOW-HIGH"),
        ("BRIDGE_PORT_RANGE", "0-70000", "outside 1-65535"),
        ("BRIDGE_RESERVED_PORTS", "80", "outside BRIDGE_PORT_RANGE"),
        ("BRIDGE_RESERVED_PORTS", "abc", "not a port number"),
        ("BRIDGE_STALE_AFTER", "forever", "duration"),
        ("BRIDGE_RESYNC_INTERVAL", "0s", "above zero"),
        ("BRIDGE_EXPOSE", "public", "'auto', 'proxy', 'published' or 'internal'"),
        ("BRIDGE_CONSUL_URL", "consul:8500", "http:// or https://"),
        ("BRIDGE_NAME_PATTERN", "((", "regular expression"),
        ("BRIDGE_NODE_ID", "bad node id", "letters, digits"),
        ("BRIDGE_HTTP_ADDR", "9105", "HOST:PORT"),
        ("BRIDGE_LOG_FORMAT", "xml", "'console' or 'json'"),
    ],
)
def test_bad_value_is_one_line_naming_variable_value_and_expectation(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {var}={value}:")
    assert expected in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("2m", 120), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5), ("0", 0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "10", "-5s", "5 s", "1d", "9" * 70 + "s", "forever", "10000h"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for seconds in (600, 2.5, 0.25, 10):
        assert parse_duration(format_duration(seconds)) == seconds
