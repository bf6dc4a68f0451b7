"""Access control for proxy-mode ports: the allow list, the limit, the labels, the log."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bridge.core.access import Access, AllowList, Network, parse_networks
from bridge.core.config import SettingsError
from bridge.core.model import LabelError, PortBinding, ServiceSpec, service_id
from bridge.core.reconcile import check_targets, desired_services
from bridge.core.registration import build_registration, resolve_endpoint
from bridge.forward.listeners import REFUSAL_LOG_INTERVAL, RefusalLog
from bridge.labels.parse import parse_labels
from bridge.pool.work import PoolOutcome
from tests.builders import make_container, make_settings

# ---- the allow list ------------------------------------------------------------------


def test_networks_parse_and_normalise() -> None:
    nets = parse_networks(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,, ")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ("10.0.0.300", "'10.0.0.300' is not an address or network"),
        ("example.com", "'example.com' is not an address or network"),
    ],
)
def test_a_bad_network_is_named(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_networks(text)


def test_an_address_is_allowed_by_the_longest_or_shortest_match() -> None:
    allow = AllowList(parse_networks("10.0.0.0/8,192.0.2.7,2001:db8::/32,127.0.0.2"))
    assert allow.permits("10.200.1.1")
    assert allow.permits("192.0.2.7") and not allow.permits("192.0.2.8")
    assert allow.permits("2001:db8::1") and not allow.permits("2001:db9::1")
    assert allow.permits("::ffff:127.0.0.2"), "a dual-stack listener's IPv4 client"
    assert allow.permits("2001:db8::1%eth0"), "a zone is not part of the address"
    assert not allow.permits("127.0.0.3")
    assert not allow.permits("not an address")


networks = st.one_of(
    st.builds(
        lambda a, p: ipaddress.ip_network((a, p), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, p: ipaddress.ip_network((a, p), strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
    st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v))),
)


@given(st.lists(networks, max_size=20), addresses)
def test_the_allow_list_agrees_with_a_plain_scan(nets: list[Network], address: str) -> None:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    plain = any(ip.version == n.version and ip in n for n in nets)
    assert AllowList(nets).permits(address) is plain


def test_refusals_say_why() -> None:
    rules = Access(allow=("127.0.0.2/32",), max_connections=2)
    assert rules.refuse("127.0.0.2", active=0) is None
    assert rules.refuse("127.0.0.2", active=1) is None
    assert rules.refuse("127.0.0.2", active=2) == "limit"
    assert rules.refuse("127.0.0.3", active=0) == "address"
    assert Access().refuse("203.0.113.9", active=10**6) is None


def test_meta_shows_the_rules_within_consuls_limit() -> None:
    assert Access().meta() == {"access_allow": "any", "access_max_connections": "unlimited"}
    assert Access(("10.0.0.0/8",), 5).meta() == {
        "access_allow": "10.0.0.0/8",
        "access_max_connections": "5",
    }
    many = tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(1000))
    shown = Access(many).meta()["access_allow"]
    assert shown == "1000 networks (mcp-bridge status --json lists them)"


# ---- the log -------------------------------------------------------------------------


def test_a_scan_cannot_flood_the_log() -> None:
    now = [100.0]
    refusals = RefusalLog(service_id("n1", "mcp-a"), 11100, clock=lambda: now[0])
    with capture_logs() as logs:
        for i in range(500):
            refusals.note("address", f"192.0.2.{i % 250}", 0)
        refusals.note("limit", "127.0.0.2", 4)  # another reason is its own stream
        now[0] += REFUSAL_LOG_INTERVAL
        refusals.note("address", "192.0.2.1", 0)
    events = [e for e in logs if e["event"] == "connection_refused"]
    assert [(e["reason"], e["suppressed"]) for e in events] == [
        ("not in the allow list", 0),
        ("limit of 4 reached", 0),
        ("not in the allow list", 499),
    ]
    assert events[0]["container"] == "mcp-a" and events[0]["port"] == 11100


# ---- labels and defaults -------------------------------------------------------------


def parse(labels: dict[str, str], **settings: str) -> ServiceSpec | LabelError:
    container = make_container(
        labels={f"mcp.{k}": v for k, v in labels.items()},
        published={8080: (PortBinding("0.0.0.0", 18080),)}
        if labels.get("expose") == "published"
        else None,
    )
    result = parse_labels(container, make_settings(**settings))
    assert result is not None
    return result


def test_labels_give_the_rules_and_defaults_fill_in() -> None:
    spec = parse({"allow": "127.0.0.2, 10.0.0.0/8", "max_connections": "3"})
    assert isinstance(spec, ServiceSpec)
    assert spec.access == Access(("127.0.0.2/32", "10.0.0.0/8"), 3)
    default = parse({}, allow="192.0.2.0/24", max_connections="9")
    assert isinstance(default, ServiceSpec)
    assert default.access == Access(("192.0.2.0/24",), 9)
    narrowed = parse({"max_connections": "1"}, allow="192.0.2.0/24")
    assert isinstance(narrowed, ServiceSpec)
    assert narrowed.access == Access(("192.0.2.0/24",), 1)


@pytest.mark.parametrize(
    ("labels", "label", "says"),
    [
        ({"allow": "10.0.0.1/8"}, "allow", "did you mean 10.0.0.0/8?"),
        ({"allow": " , "}, "allow", "names no address"),
        ({"max_connections": "0"}, "max_connections", "a whole number above 0"),
        ({"max_connections": "-1"}, "max_connections", "a whole number above 0"),
        ({"max_connections": "١٢"}, "max_connections", "digits only"),
        ({"max_connections": "99999999"}, "max_connections", "at most 1000000"),
        (
            {"allow": "127.0.0.2", "expose": "published"},
            "allow",
            "the bridge cannot enforce it: connections reach the container without passing",
        ),
        (
            {"max_connections": "4", "expose": "internal"},
            "max_connections",
            "applies only to expose=proxy, and expose is internal here",
        ),
    ],
)
def test_access_label_errors_say_why(labels: dict[str, str], label: str, says: str) -> None:
    error = parse(labels)
    assert isinstance(error, LabelError), error
    assert error.label == f"mcp.{label}"
    assert says in error.reason


def test_bad_defaults_stop_the_agent_at_start_up() -> None:
    with pytest.raises(SettingsError, match="BRIDGE_ALLOW"):
        make_settings(allow="10.0.0.1/8")
    with pytest.raises(SettingsError, match="BRIDGE_MAX_CONNECTIONS"):
        make_settings(max_connections="-1")


def test_access_goes_to_meta_for_proxy_services_only() -> None:
    spec = parse({"allow": "127.0.0.2", "max_connections": "3"})
    assert isinstance(spec, ServiceSpec)
    reg = build_registration(spec, resolve_endpoint(spec, 11100, "10.0.0.5"), "n1")
    assert reg.meta["access_allow"] == "127.0.0.2/32"
    assert reg.meta["access_max_connections"] == "3"
    published = parse({"expose": "published"}, allow="10.0.0.0/8")
    assert isinstance(published, ServiceSpec)
    reg = build_registration(published, resolve_endpoint(published, None, "10.0.0.5"), "n1")
    assert "access_allow" not in reg.meta


def test_the_bridges_own_probe_bypasses_the_rules_it_enforces() -> None:
    def probe_url(labels: dict[str, str]) -> str:
        spec = parse({"check": "mcp", **labels})
        assert isinstance(spec, ServiceSpec)
        desired = desired_services(
            {spec.container.name: spec},
            PoolOutcome(ports={spec.container.name: 11100}),
            advertise="10.0.0.5",
            node_id="n1",
            probe_meta={},
        )
        sid = service_id("n1", spec.container.name)
        return check_targets(desired.services.items(), {sid})[sid].url

    assert probe_url({}) == "http://10.0.0.5:11100/mcp", "no rules: the whole path"
    assert probe_url({"allow": "192.0.2.0/24"}) == "http://172.17.0.2:8080/mcp"
    assert probe_url({"max_connections": "1"}) == "http://172.17.0.2:8080/mcp"
