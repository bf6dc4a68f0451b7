"""The reconciler's pure core, first half: from a spec to what Consul is given.

Covers resolve_endpoint (which address and port each expose mode registers, and the
endpoint errors), build_registration (service id, tags, contract meta, probe meta,
fingerprint) and build_checks (http, tcp, ttl and no check, IPv6 bracketing). Plain data in,
plain data out: containers built by hand, specs from the real label parser.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bridge.core.model import (
    MANAGED_BY,
    CheckKind,
    ExposeMode,
    PortBinding,
    Registration,
    ServiceSpec,
)
from bridge.core.registration import (
    FINGERPRINT,
    PROBE_META,
    Endpoint,
    EndpointError,
    build_checks,
    build_registration,
    resolve_endpoint,
)
from tests.builders import ADVERTISE, CONTAINER_IP, NODE, make_container
from tests.reconcile_cases import PROBE, make_spec, proxy_spec, published_spec, register, spec_for

# ---- resolve_endpoint -----------------------------------------------------------------


def test_published_on_all_interfaces_advertises_the_advertise_address() -> None:
    spec = published_spec(PortBinding("0.0.0.0", 32768))
    assert spec.expose is ExposeMode.PUBLISHED  # auto: the container publishes mcp.port
    assert resolve_endpoint(spec, None, ADVERTISE) == Endpoint(ADVERTISE, 32768, 32768)


@pytest.mark.parametrize("host_ip", ["", "::"])
def test_published_on_other_unspecified_addresses_advertises_too(host_ip: str) -> None:
    spec = published_spec(PortBinding(host_ip, 32768))
    assert resolve_endpoint(spec, None, ADVERTISE) == Endpoint(ADVERTISE, 32768, 32768)


def test_published_on_one_ip_registers_that_ip() -> None:
    spec = published_spec(PortBinding("127.0.0.1", 7000))
    assert resolve_endpoint(spec, None, ADVERTISE) == Endpoint("127.0.0.1", 7000, 7000)


def test_published_prefers_ipv4_all_interfaces_over_ipv6() -> None:
    # Some engines publish -p 8080 on different ephemeral ports for IPv4 and IPv6.
    for bindings in (
        (PortBinding("::", 32769), PortBinding("0.0.0.0", 32768)),
        (PortBinding("0.0.0.0", 32768), PortBinding("::", 32769)),
    ):
        spec = published_spec(*bindings)
        assert resolve_endpoint(spec, None, ADVERTISE) == Endpoint(ADVERTISE, 32768, 32768)


def test_published_ignores_the_pool_port() -> None:
    spec = published_spec(PortBinding("0.0.0.0", 32768))
    assert resolve_endpoint(spec, 11105, ADVERTISE).port == 32768


def test_published_without_a_binding_is_an_endpoint_error() -> None:
    spec = published_spec(PortBinding("0.0.0.0", 32768))
    unpublished = dataclasses.replace(
        spec, container=dataclasses.replace(spec.container, published={})
    )
    with pytest.raises(EndpointError, match="8080"):
        resolve_endpoint(unpublished, None, ADVERTISE)


def test_proxy_registers_the_pool_port_on_the_advertise_address() -> None:
    spec = proxy_spec()
    assert spec.expose is ExposeMode.PROXY
    assert resolve_endpoint(spec, 11103, ADVERTISE) == Endpoint(ADVERTISE, 11103, 11103)


def test_auto_without_a_published_port_is_proxy() -> None:
    assert spec_for().expose is ExposeMode.PROXY


def test_proxy_without_a_pool_port_is_an_endpoint_error() -> None:
    with pytest.raises(EndpointError):
        resolve_endpoint(proxy_spec(), None, ADVERTISE)


def test_internal_registers_the_container_ip_and_port() -> None:
    spec = spec_for(labels={"mcp.expose": "internal"})
    assert resolve_endpoint(spec, None, ADVERTISE) == Endpoint(CONTAINER_IP, 8080, None)
    # A pool port, if one is somehow passed, changes nothing.
    assert resolve_endpoint(spec, 11100, ADVERTISE) == Endpoint(CONTAINER_IP, 8080, None)


def test_internal_uses_the_chosen_networks_address() -> None:
    spec = spec_for(
        labels={"mcp.expose": "internal", "mcp.network": "backend", "mcp.port": "7000"},
        exposed=(7000, 9000),
        networks={"bridge": CONTAINER_IP, "backend": "172.20.0.7"},
    )
    assert resolve_endpoint(spec, None, ADVERTISE) == Endpoint("172.20.0.7", 7000, None)


def test_internal_without_an_address_is_an_endpoint_error() -> None:
    spec = dataclasses.replace(spec_for(labels={"mcp.expose": "internal"}), address=None)
    with pytest.raises(EndpointError):
        resolve_endpoint(spec, None, ADVERTISE)


# ---- build_registration ---------------------------------------------------------------


def test_service_id_is_node_and_container_name() -> None:
    reg = register(proxy_spec("mcp-weather"))
    assert reg.service_id == f"{NODE}:mcp-weather"
    assert reg.name == "weather"


def test_service_id_survives_container_recreation() -> None:
    first = register(make_spec(make_container(cid="a" * 16, labels={"mcp.expose": "proxy"})))
    second = register(make_spec(make_container(cid="b" * 16, labels={"mcp.expose": "proxy"})))
    assert first.service_id == second.service_id


def test_tags_start_with_mcp_then_label_tags_in_order() -> None:
    reg = register(proxy_spec(**{"mcp.tags": "zeta, alpha,mcp,beta"}))
    assert reg.tags == ("mcp", "zeta", "alpha", "beta")
    assert register(proxy_spec()).tags == ("mcp",)


def test_proxy_registration_carries_every_contract_meta_key() -> None:
    spec = proxy_spec(
        **{
            "mcp.transport": "sse",
            "mcp.path": "/sse",
            "mcp.meta.team": "search",
            "mcp.meta.tier": "gold",
        }
    )
    reg = register(spec, 11104)
    assert (reg.address, reg.port) == (ADVERTISE, 11104)
    meta = dict(reg.meta)
    fingerprint = meta.pop(FINGERPRINT)
    assert meta == {
        "managed_by": MANAGED_BY,
        "bridge_node": NODE,
        "container_id": "c0ffee00c0ffee00",
        "container_name": "mcp-x",
        "image": "example/mcp:1",
        "container_port": "8080",
        "host_port": "11104",
        "expose": "proxy",
        "transport": "sse",
        "path": "/sse",
        "team": "search",
        "tier": "gold",
        "access_allow": "any",
        "access_max_connections": "unlimited",
    }
    assert MANAGED_BY == "mcp-bridge"
    assert len(fingerprint) == 16
    assert all(isinstance(v, str) for v in reg.meta.values())


def test_published_registration_records_the_published_host_port() -> None:
    reg = register(published_spec(PortBinding("0.0.0.0", 32768)), None)
    assert reg.meta["host_port"] == "32768"
    assert reg.meta["expose"] == "published"
    assert reg.meta["container_port"] == "8080"


def test_internal_registration_has_no_host_port_meta() -> None:
    reg = register(spec_for(labels={"mcp.expose": "internal"}), None)
    assert "host_port" not in reg.meta
    assert (reg.address, reg.port) == (CONTAINER_IP, 8080)
    assert reg.meta["expose"] == "internal"
    assert reg.meta["transport"] == "streamable-http"
    assert reg.meta["path"] == "/mcp"


def test_probe_meta_is_merged_and_only_the_probe_keys() -> None:
    forged = {**PROBE, "managed_by": "someone-else", "bridge_node": "other", "extra": "x"}
    reg = register(proxy_spec(), probe_meta=forged)
    for key, value in PROBE.items():
        assert reg.meta[key] == value
    assert reg.meta["managed_by"] == MANAGED_BY
    assert reg.meta["bridge_node"] == NODE
    assert "extra" not in reg.meta


def test_without_probe_meta_no_probe_keys() -> None:
    reg = register(proxy_spec())
    assert not set(PROBE_META) & set(reg.meta)


def test_fingerprint_is_stable_for_equal_input() -> None:
    one = register(proxy_spec(**{"mcp.tags": "a,b", "mcp.meta.k": "v"}))
    two = register(proxy_spec(**{"mcp.tags": "a,b", "mcp.meta.k": "v"}))
    assert one == two
    assert one.meta[FINGERPRINT] == two.meta[FINGERPRINT]


def test_fingerprint_ignores_probe_meta() -> None:
    bare = register(proxy_spec())
    probed = register(proxy_spec(), probe_meta=PROBE)
    reprobed = register(proxy_spec(), probe_meta={**PROBE, "mcp_server_version": "9"})
    assert bare.meta[FINGERPRINT] == probed.meta[FINGERPRINT] == reprobed.meta[FINGERPRINT]


def _fingerprint(reg: Registration) -> str:
    return reg.meta[FINGERPRINT]


def test_fingerprint_changes_with_everything_registered() -> None:
    base_spec = proxy_spec()
    base = _fingerprint(register(base_spec, 11100))
    endpoint = resolve_endpoint(base_spec, 11100, ADVERTISE)
    variants = {
        "address": build_registration(
            base_spec, resolve_endpoint(base_spec, 11100, "10.0.0.6"), NODE
        ),
        "port": register(base_spec, 11101),
        "tags": register(proxy_spec(**{"mcp.tags": "extra"})),
        "label meta": register(proxy_spec(**{"mcp.meta.team": "a"})),
        "path meta": register(proxy_spec(**{"mcp.path": "/other"})),
        "container id": register(
            make_spec(make_container(cid="feedface", labels={"mcp.expose": "proxy"}))
        ),
        "name": register(proxy_spec(**{"mcp.name": "renamed"})),
        "check kind": register(proxy_spec(**{"mcp.check": "tcp"})),
        "check interval": register(proxy_spec(**{"mcp.check.interval": "30s"})),
        "check deregister": register(proxy_spec(**{"mcp.check.deregister_after": "5m"})),
        "node": build_registration(base_spec, endpoint, "n2"),
    }
    prints = {what: _fingerprint(reg) for what, reg in variants.items()}
    assert all(fp != base for fp in prints.values()), prints
    assert len(set(prints.values())) == len(prints)


# ---- build_checks ---------------------------------------------------------------------


def checks_for(spec: ServiceSpec, pool_port: int | None = 11100) -> tuple[dict[str, Any], ...]:
    endpoint = resolve_endpoint(spec, pool_port, ADVERTISE)
    return tuple(dict(c) for c in build_checks(spec, f"{NODE}:{spec.container.name}", endpoint))


def test_http_check() -> None:
    spec = proxy_spec(
        **{
            "mcp.check": "http",
            "mcp.check.path": "/healthz",
            "mcp.check.interval": "15s",
            "mcp.check.timeout": "500ms",
            "mcp.check.deregister_after": "2m",
        }
    )
    (check,) = checks_for(spec, 11102)
    assert check["CheckID"] == "n1:mcp-x:http"
    assert check["HTTP"] == f"http://{ADVERTISE}:11102/healthz"
    assert check["Interval"] == "15s"
    assert check["Timeout"] == "500ms"
    assert check["DeregisterCriticalServiceAfter"] == "120s"
    assert "TTL" not in check


def test_http_check_defaults() -> None:
    (check,) = checks_for(proxy_spec(**{"mcp.check": "http"}))
    assert check["HTTP"] == f"http://{ADVERTISE}:11100/health"
    assert (check["Interval"], check["Timeout"]) == ("10s", "2s")
    # BRIDGE_DEREGISTER_AFTER (10m here) when no label says otherwise.
    assert check["DeregisterCriticalServiceAfter"] == "600s"


def test_http_check_on_internal_targets_the_container() -> None:
    spec = spec_for(labels={"mcp.expose": "internal", "mcp.check": "http"})
    (check,) = checks_for(spec, None)
    assert check["HTTP"] == f"http://{CONTAINER_IP}:8080/health"


def test_tcp_check() -> None:
    (check,) = checks_for(proxy_spec(**{"mcp.check": "tcp", "mcp.check.interval": "5s"}), 11107)
    assert check["CheckID"] == "n1:mcp-x:tcp"
    assert check["TCP"] == f"{ADVERTISE}:11107"
    assert (check["Interval"], check["Timeout"]) == ("5s", "2s")
    assert check["DeregisterCriticalServiceAfter"] == "600s"
    assert "HTTP" not in check
    assert "TTL" not in check


@pytest.mark.parametrize("kind", ["mcp", "docker"])
def test_ttl_checks_for_mcp_and_docker(kind: str) -> None:
    labels = {"mcp.check.interval": "10s", "mcp.check.timeout": "3s"}
    if kind != "mcp":
        labels["mcp.check"] = kind
    (check,) = checks_for(proxy_spec(**labels))
    assert check["CheckID"] == f"n1:mcp-x:{kind}"
    assert check["Status"] == "critical"  # nothing reported yet: not passing
    ttl = str(check["TTL"])
    assert ttl.endswith("s") and not ttl.endswith("ms")
    assert float(ttl[:-1]) > 10  # outlives a missed report
    assert check["DeregisterCriticalServiceAfter"] == "600s"
    assert not {"HTTP", "TCP", "Interval"} & set(check)


def test_mcp_is_the_default_check() -> None:
    (check,) = checks_for(proxy_spec())
    assert check["CheckID"] == "n1:mcp-x:mcp"
    assert "TTL" in check


def test_no_check() -> None:
    assert checks_for(proxy_spec(**{"mcp.check": "none"})) == ()
    assert register(proxy_spec(**{"mcp.check": "none"})).checks == ()


def test_registration_carries_the_checks() -> None:
    spec = proxy_spec(**{"mcp.check": "tcp"})
    assert tuple(dict(c) for c in register(spec, 11100).checks) == checks_for(spec, 11100)


@pytest.mark.parametrize(
    ("kind", "field", "expected"),
    [
        ("http", "HTTP", "http://[fd00::5]:11100/health"),
        ("tcp", "TCP", "[fd00::5]:11100"),
    ],
)
def test_ipv6_addresses_are_bracketed(kind: str, field: str, expected: str) -> None:
    spec = proxy_spec(**{"mcp.check": kind})
    endpoint = resolve_endpoint(spec, 11100, "fd00::5")
    (check,) = build_checks(spec, "n1:mcp-x", endpoint)
    assert check[field] == expected
    reg = build_registration(spec, endpoint, NODE)
    assert reg.address == "fd00::5"  # Consul wants the bare address for the service


def test_ipv6_published_binding_is_bracketed_in_checks() -> None:
    spec = published_spec(PortBinding("::1", 7000), labels={"mcp.check": "http"})
    endpoint = resolve_endpoint(spec, None, ADVERTISE)
    assert endpoint == Endpoint("::1", 7000, 7000)
    (check,) = build_checks(spec, "n1:mcp-x", endpoint)
    assert check["HTTP"] == "http://[::1]:7000/health"


def test_check_kind_values_match_check_ids() -> None:
    for kind in CheckKind:
        if kind is CheckKind.NONE:
            continue
        (check,) = checks_for(proxy_spec(**{"mcp.check": kind.value}))
        assert check["CheckID"] == f"n1:mcp-x:{kind.value}"
