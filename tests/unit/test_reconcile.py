"""The reconciler's pure core: endpoints, registrations, checks, plans, the pool's part.

Plain data in, plain data out: containers are built by hand, specs come from the real label
parser, the pool is the real in-memory PoolState. No Docker, no Consul, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import PortRange, Settings
from bridge.labels import parse_labels
from bridge.model import (
    MANAGED_BY,
    AllocKind,
    AllocState,
    CheckKind,
    Container,
    ExposeMode,
    PortBinding,
    Registration,
    ServiceSpec,
)
from bridge.pool.allocator import PoolExhausted, PoolState
from bridge.pool.work import PoolWork, apply_pool_work, pool_work
from bridge.reconcile import Plan, plan, read_labels
from bridge.registration import (
    FINGERPRINT,
    PROBE_META,
    Endpoint,
    EndpointError,
    build_checks,
    build_registration,
    differs,
    resolve_endpoint,
)
from tests.builders import ADVERTISE, CONTAINER_IP, NODE, make_container, make_settings

NOW = 1_000_000.0
STALE_AFTER = 600.0
PROBE = {
    "mcp_server_name": "probe-server",
    "mcp_server_version": "1.2.3",
    "mcp_protocol_version": "2025-03-26",
}
SETTINGS = make_settings()


def make_spec(container: Container, settings: Settings = SETTINGS) -> ServiceSpec:
    result = parse_labels(container, settings)
    assert isinstance(result, ServiceSpec), result
    return result


def spec_for(name: str = "mcp-x", **kwargs: Any) -> ServiceSpec:
    return make_spec(make_container(name, **kwargs))


def proxy_spec(name: str = "mcp-x", **labels: str) -> ServiceSpec:
    return spec_for(name, labels={"mcp.expose": "proxy", **labels})


def published_spec(
    *bindings: PortBinding, name: str = "mcp-x", labels: Mapping[str, str] | None = None
) -> ServiceSpec:
    return spec_for(name, labels=labels, published={8080: bindings})


def register(spec: ServiceSpec, pool_port: int | None = 11100, **kw: Any) -> Registration:
    return build_registration(spec, resolve_endpoint(spec, pool_port, ADVERTISE), NODE, **kw)


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


# ---- differs --------------------------------------------------------------------------


def test_differs_when_nothing_is_registered() -> None:
    assert differs(register(proxy_spec()), None)


def test_same_fingerprint_does_not_differ() -> None:
    desired = register(proxy_spec())
    # What Consul gives back may carry more (or other) fields: only our own meta counts.
    actual = Registration(
        desired.service_id, desired.name, "", 0, (), {**desired.meta, "consul-extra": "x"}
    )
    assert not differs(desired, actual)


def test_fingerprint_change_differs() -> None:
    assert differs(register(proxy_spec(), 11101), register(proxy_spec(), 11100))


def test_probe_meta_change_differs() -> None:
    bare = register(proxy_spec())
    probed = register(proxy_spec(), probe_meta=PROBE)
    reprobed = register(proxy_spec(), probe_meta={**PROBE, "mcp_server_version": "2"})
    assert differs(probed, bare)
    assert differs(reprobed, probed)
    assert not differs(probed, register(proxy_spec(), probe_meta=PROBE))


def test_missing_fingerprint_differs() -> None:
    desired = register(proxy_spec())
    legacy = dataclasses.replace(
        desired, meta={k: v for k, v in desired.meta.items() if k != FINGERPRINT}
    )
    assert differs(desired, legacy)


# ---- plan -----------------------------------------------------------------------------


def reg(sid: str, fingerprint: str = "fp", **meta: str) -> Registration:
    return Registration(
        service_id=sid,
        name="svc",
        address=ADVERTISE,
        port=11100,
        tags=("mcp",),
        meta={"managed_by": MANAGED_BY, "bridge_node": NODE, FINGERPRINT: fingerprint, **meta},
    )


def test_plan_registers_missing_and_different_only() -> None:
    desired = {"n1:a": reg("n1:a"), "n1:b": reg("n1:b", "new"), "n1:c": reg("n1:c")}
    actual = {"n1:a": reg("n1:a"), "n1:b": reg("n1:b", "old")}
    result = plan(desired, actual, scope=None, first_full_pass_done=True)
    assert [r.service_id for r in result.register] == ["n1:b", "n1:c"]
    assert result.deregister == ()


def test_plan_deregisters_own_services_no_longer_desired() -> None:
    desired = {"n1:a": reg("n1:a")}
    actual = {"n1:a": reg("n1:a"), "n1:gone": reg("n1:gone"), "n1:also": reg("n1:also")}
    result = plan(desired, actual, scope=None, first_full_pass_done=True)
    assert result.register == ()
    assert result.deregister == ("n1:also", "n1:gone")


def test_plan_on_probation_never_deregisters() -> None:
    desired = {"n1:a": reg("n1:a", "new")}
    actual = {"n1:a": reg("n1:a", "old"), "n1:unknown": reg("n1:unknown")}
    for scope in (None, {"n1:a", "n1:unknown"}):
        result = plan(desired, actual, scope=scope, first_full_pass_done=False)
        assert result.deregister == ()
        assert [r.service_id for r in result.register] == ["n1:a"]


def test_plan_scope_limits_registering_and_deregistering() -> None:
    desired = {"n1:a": reg("n1:a"), "n1:b": reg("n1:b")}
    actual = {"n1:x": reg("n1:x"), "n1:y": reg("n1:y")}
    result = plan(desired, actual, scope={"n1:a", "n1:x"}, first_full_pass_done=True)
    assert [r.service_id for r in result.register] == ["n1:a"]
    assert result.deregister == ("n1:x",)
    assert not plan(desired, actual, scope=set(), first_full_pass_done=True)


def test_empty_plan_is_falsy() -> None:
    assert not Plan()
    assert not plan({}, {}, scope=None, first_full_pass_done=True)
    assert plan({"n1:a": reg("n1:a")}, {}, scope=None, first_full_pass_done=True)


def test_plan_with_real_registrations_after_probe() -> None:
    desired = {r.service_id: r for r in [register(proxy_spec("mcp-a"), probe_meta=PROBE)]}
    actual = {r.service_id: r for r in [register(proxy_spec("mcp-a"))]}
    result = plan(desired, actual, scope=None, first_full_pass_done=True)
    assert result.register == (desired["n1:mcp-a"],)


SIDS = st.sampled_from([f"{NODE}:mcp-{c}" for c in "abcdefgh"])
REGS = st.builds(
    reg,
    SIDS,
    st.sampled_from(["fp1", "fp2", "fp3"]),
    **{k: st.sampled_from(["", "v1", "v2"]) for k in PROBE_META},
)


def _by_id(regs: list[Registration]) -> dict[str, Registration]:
    return {r.service_id: r for r in regs}


def _apply(actual: Mapping[str, Registration], result: Plan) -> dict[str, Registration]:
    after = dict(actual)
    for r in result.register:
        after[r.service_id] = r
    for sid in result.deregister:
        del after[sid]
    return after


@given(
    desired=st.lists(REGS).map(_by_id),
    actual=st.lists(REGS).map(_by_id),
    scope=st.none() | st.sets(SIDS),
    first_full_pass_done=st.booleans(),
)
def test_plan_applied_once_leaves_nothing_to_do(
    desired: dict[str, Registration],
    actual: dict[str, Registration],
    scope: set[str] | None,
    first_full_pass_done: bool,
) -> None:
    first = plan(desired, actual, scope=scope, first_full_pass_done=first_full_pass_done)
    # Only what is asked: desired things registered, own undesired things removed.
    assert {r.service_id for r in first.register} <= set(desired)
    assert set(first.deregister) <= set(actual) - set(desired)
    assert len(set(first.deregister)) == len(first.deregister)
    if not first_full_pass_done:
        assert first.deregister == ()
    if scope is not None:
        assert {r.service_id for r in first.register} <= scope
        assert set(first.deregister) <= scope
    after = _apply(actual, first)
    # In scope, Consul now holds exactly what is desired (after a complete listing).
    for sid in scope if scope is not None else set(desired) | set(actual):
        if sid in desired:
            assert not differs(desired[sid], after.get(sid))
        elif first_full_pass_done:
            assert sid not in after
    # Out of scope, nothing moved.
    for sid in set(actual) - (scope if scope is not None else set(actual)):
        assert after[sid] is actual[sid]
    second = plan(desired, after, scope=scope, first_full_pass_done=first_full_pass_done)
    assert not second, second
    assert second == Plan()


# ---- pool_work + apply_pool_work -------------------------------------------------------


def pool_state(low: int = 11100, high: int = 11109) -> PoolState:
    return PoolState(PortRange(low, high), ())


def pool_step(
    state: PoolState,
    containers: list[Container],
    *,
    complete: bool = True,
    gone: tuple[str, ...] = (),
    sweep: bool = False,
    now: float = NOW,
    busy: frozenset[int] = frozenset(),
    settings: Settings = SETTINGS,
) -> tuple[PoolWork, Any]:
    """The pool's step of a pass (passes.py, step 3) on its own: the pass's own pure
    functions, labels read as the pass reads them, with no I/O around them."""
    specs, _ = read_labels(containers, settings)
    work = pool_work(containers, specs, complete=complete, gone=gone, sweep=sweep)
    outcome = apply_pool_work(
        state, work, now=now, stale_after=STALE_AFTER, is_free=lambda p: p not in busy
    )
    return work, outcome


def proxy(name: str, state: str = "running", **labels: str) -> Container:
    return make_container(name, labels={"mcp.expose": "proxy", **labels}, state=state)


def published(name: str, host_port: int, state: str = "running") -> Container:
    return make_container(name, published={8080: (PortBinding("0.0.0.0", host_port),)}, state=state)


def test_pool_work_lists_allocations_and_claims() -> None:
    containers = [
        proxy("mcp-b", **{"mcp.host_port": "11105"}),
        proxy("mcp-a"),
        published("mcp-p", 11103),
        make_container("mcp-i", labels={"mcp.expose": "internal"}),
        proxy("mcp-stopped", state="exited"),
        make_container("unmanaged"),
    ]
    specs = {c.name: make_spec(c) for c in containers if c.name.startswith("mcp-")}
    work = pool_work(containers, specs, complete=True)
    assert work.allocations == [("mcp-a", None, ""), ("mcp-b", 11105, "")]
    assert work.claims == [("mcp-p", 11103)]
    assert work.present == {
        "mcp-b": True,
        "mcp-a": True,
        "mcp-p": True,
        "mcp-i": True,
        "mcp-stopped": False,
        "unmanaged": True,
    }
    assert work.observe == {}
    assert work.sweep is False


def test_pool_work_partial_observes_listed_and_gone() -> None:
    containers = [proxy("mcp-a"), proxy("mcp-s", state="exited")]
    work = pool_work(containers, {}, complete=False, gone=["mcp-old"], sweep=False)
    assert work.present is None
    assert work.observe == {"mcp-a": True, "mcp-s": False, "mcp-old": None}


def test_proxy_containers_get_pool_ports() -> None:
    state = pool_state()
    _, out = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    assert out.ports == {"mcp-a": 11100, "mcp-b": 11101}
    assert out.errors == {}
    for name, port in out.ports.items():
        alloc = state.get(name)
        assert alloc is not None
        assert (alloc.port, alloc.kind, alloc.state) == (port, AllocKind.POOL, AllocState.ACTIVE)


def test_preferred_host_port_is_honoured() -> None:
    state = pool_state()
    _, out = pool_step(state, [proxy("mcp-a", **{"mcp.host_port": "11107"}), proxy("mcp-b")])
    assert out.ports == {"mcp-a": 11107, "mcp-b": 11100}


def test_busy_preferred_port_falls_back_to_a_free_one() -> None:
    state = pool_state()
    _, out = pool_step(
        state, [proxy("mcp-a", **{"mcp.host_port": "11107"})], busy=frozenset({11107})
    )
    assert out.ports == {"mcp-a": 11100}


def test_pool_ports_are_sticky_across_passes() -> None:
    state = pool_state()
    _, first = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    _, second = pool_step(state, [proxy("mcp-b"), proxy("mcp-a"), proxy("mcp-c")], now=NOW + 5)
    assert second.ports["mcp-a"] == first.ports["mcp-a"]
    assert second.ports["mcp-b"] == first.ports["mcp-b"]


def test_published_ports_are_claimed_as_external() -> None:
    state = pool_state()
    _, out = pool_step(state, [published("mcp-p", 11100), proxy("mcp-a")])
    claim = state.get("mcp-p")
    assert claim is not None
    assert (claim.port, claim.kind, claim.state) == (11100, AllocKind.EXTERNAL, AllocState.ACTIVE)
    # The pool never hands out a port a container publishes by itself.
    assert out.ports == {"mcp-a": 11101}
    assert "mcp-p" not in out.ports


def test_published_port_outside_the_pool_is_not_recorded() -> None:
    state = pool_state()
    pool_step(state, [published("mcp-p", 32768)])
    assert state.get("mcp-p") is None
    assert len(state) == 0


def test_complete_listing_orphans_absent_owners() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b"), published("mcp-p", 11105)])
    pool_step(state, [proxy("mcp-b")], now=NOW + 10)
    for name in ("mcp-a", "mcp-p"):
        alloc = state.get(name)
        assert alloc is not None
        assert alloc.state is AllocState.ORPHANED
        assert alloc.missing_since == NOW + 10
    b = state.get("mcp-b")
    assert b is not None and b.state is AllocState.ACTIVE


def test_partial_listing_orphans_only_the_named_gone() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    pool_step(state, [], complete=False, gone=("mcp-a",), now=NOW + 1)
    a, b = state.get("mcp-a"), state.get("mcp-b")
    assert a is not None and a.state is AllocState.ORPHANED
    assert b is not None and b.state is AllocState.ACTIVE


def test_stopped_container_keeps_its_port_held() -> None:
    state = pool_state()
    _, first = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    _, stopped = pool_step(state, [proxy("mcp-a", state="exited"), proxy("mcp-b")], now=NOW + 1)
    a = state.get("mcp-a")
    assert a is not None
    assert (a.state, a.missing_since) == (AllocState.HELD, None)
    assert "mcp-a" not in stopped.ports
    # Held long past stale_after: a stopped container is not gone.
    _, later = pool_step(
        state,
        [proxy("mcp-a", state="exited"), proxy("mcp-b"), proxy("mcp-c")],
        sweep=True,
        now=NOW + 10 * STALE_AFTER,
    )
    assert later.released == []
    assert later.ports["mcp-c"] not in (first.ports["mcp-a"], first.ports["mcp-b"])
    _, back = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")], now=NOW + 11 * STALE_AFTER)
    assert back.ports["mcp-a"] == first.ports["mcp-a"]


def test_sweep_releases_orphans_only_after_stale_after() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    pool_step(state, [proxy("mcp-b")], now=NOW + 1)  # mcp-a gone at NOW + 1
    _, early = pool_step(state, [proxy("mcp-b")], sweep=True, now=NOW + STALE_AFTER)
    assert early.released == []
    assert state.get("mcp-a") is not None
    _, due = pool_step(state, [proxy("mcp-b")], sweep=True, now=NOW + 1 + STALE_AFTER)
    assert [(a.owner, a.port) for a in due.released] == [("mcp-a", 11100)]
    assert state.get("mcp-a") is None
    assert state.holder(11100) is None


def test_orphan_that_comes_back_before_the_sweep_keeps_its_port() -> None:
    state = pool_state()
    _, first = pool_step(state, [proxy("mcp-a")])
    pool_step(state, [], now=NOW + 1)
    _, back = pool_step(state, [proxy("mcp-a")], sweep=True, now=NOW + 2 * STALE_AFTER)
    assert back.released == []
    assert back.ports == first.ports


def test_sweep_without_sweep_flag_releases_nothing() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a")])
    pool_step(state, [], now=NOW + 1)
    _, out = pool_step(state, [], now=NOW + 10 * STALE_AFTER)
    assert out.released == []
    a = state.get("mcp-a")
    assert a is not None and a.state is AllocState.ORPHANED


def test_exhaustion_is_reported_per_container_without_affecting_others() -> None:
    state = pool_state(11100, 11102)
    settings = make_settings(port_range="11100-11102")
    containers = [
        published("mcp-p", 11101),
        proxy("mcp-a"),
        proxy("mcp-b"),
        proxy("mcp-c"),
        make_container("mcp-i", labels={"mcp.expose": "internal"}),
    ]
    _, out = pool_step(state, containers, settings=settings)
    assert out.ports == {"mcp-a": 11100, "mcp-b": 11102}
    assert set(out.errors) == {"mcp-c"}
    error = out.errors["mcp-c"]
    assert isinstance(error, PoolExhausted)
    assert "11100-11102" in str(error)
    assert error.holders["active"] == 2 and error.holders["external"] == 1
    claim = state.get("mcp-p")
    assert claim is not None and claim.kind is AllocKind.EXTERNAL
    assert state.get("mcp-c") is None


def test_exhausted_container_gets_a_port_once_one_frees() -> None:
    state = pool_state(11100, 11101)
    settings = make_settings(port_range="11100-11101")
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b")], settings=settings)
    _, full = pool_step(state, [proxy("mcp-b"), proxy("mcp-c")], now=NOW + 1, settings=settings)
    assert set(full.errors) == {"mcp-c"}  # mcp-a's port is orphaned, not free yet
    _, freed = pool_step(
        state,
        [proxy("mcp-b"), proxy("mcp-c")],
        sweep=True,
        now=NOW + 1 + STALE_AFTER,
        settings=settings,
    )
    assert [a.owner for a in freed.released] == ["mcp-a"]
    assert freed.errors == {}
    assert freed.ports == {"mcp-b": 11101, "mcp-c": 11100}


def test_pool_pass_is_idempotent() -> None:
    state = pool_state()
    containers = [proxy("mcp-a"), proxy("mcp-b", **{"mcp.host_port": "11108"})]
    containers.append(published("mcp-p", 11104))
    _, first = pool_step(state, containers)
    before = state.allocations()
    _, again = pool_step(state, containers)
    assert again.ports == first.ports
    assert state.allocations() == before
