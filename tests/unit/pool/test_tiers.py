"""Port tiers: BRIDGE_PORT_TIERS, the layout, mcp.tier, and what a pass reports."""

from __future__ import annotations

import pytest

from bridge.core.config import Settings, SettingsError
from bridge.core.model import LabelError, PortRange, ServiceSpec
from bridge.core.reconcile import ManagedService, desired_services
from bridge.labels.parse import parse_labels
from bridge.pool.allocator import PoolExhausted, PoolState, PortOutsidePool
from bridge.pool.tiers import UNTIERED, TierLayout, parse_tiers
from bridge.pool.work import PoolOutcome
from tests.builders import make_container, make_settings

TIERS = "core=9000-9019,business=9020-9039,dev=9040-9059"


def tiered(**overrides: str) -> Settings:
    return make_settings(port_range="9000-9099", port_tiers=TIERS, **overrides)


# ---- BRIDGE_PORT_TIERS -------------------------------------------------------------


def test_tiers_parse_in_the_order_given() -> None:
    s = tiered()
    assert s.tier_layout.names() == ["core", "business", "dev"]
    assert str(s.tier_layout["business"]) == "9020-9039"
    assert str(s.tier_layout[UNTIERED]) == "9060-9099"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("core=9000-9019,core=9020-9039", "tier core is named twice"),
        ("core:9000-9019", "expected NAME=LOW-HIGH"),
        ("Core=9000-9019", "tier name 'Core'"),
        ("untiered=9000-9019", "it names the ports no tier owns"),
        ("core=9019-9000", "tier core:"),
        ("core=8990-9019", "tier core (8990-9019) is not inside BRIDGE_PORT_RANGE 9000-9099"),
        ("core=9000-9019,dev=9010-9029", "tiers core (9000-9019) and dev (9010-9029) overlap"),
    ],
)
def test_bad_tiers_are_refused_at_start_up_naming_the_tier(value: str, says: str) -> None:
    with pytest.raises(SettingsError) as exc:
        make_settings(port_range="9000-9099", port_tiers=value)
    assert "BRIDGE_PORT_TIERS" in str(exc.value)
    assert says in str(exc.value)


def test_untiered_ports_are_the_rest_of_the_range_in_pieces() -> None:
    layout = TierLayout(PortRange(100, 111), parse_tiers("a=100-101,z=103-103,b=106-109"))
    rest = layout[UNTIERED]
    assert [str(s) for s in rest.spans] == ["102-102", "104-105", "110-111"]
    assert list(rest.ports()) == [102, 104, 105, 110, 111]
    assert (layout.of(100), layout.of(104), layout.of(112)) == ("a", UNTIERED, None)


@pytest.mark.parametrize(
    ("cursor", "order"),
    [
        (None, [102, 104, 105, 110, 111]),
        (104, [105, 110, 111, 102, 104]),
        (111, [102, 104, 105, 110, 111]),
        (106, [102, 104, 105, 110, 111]),  # a cursor outside the tier: from the bottom
    ],
)
def test_a_tier_wraps_around_across_its_pieces(cursor: int | None, order: list[int]) -> None:
    layout = TierLayout(PortRange(100, 111), parse_tiers("a=100-101,z=103-103,b=106-109"))
    assert list(layout[UNTIERED].after(cursor)) == order


# ---- the pool, per tier ------------------------------------------------------------


def test_each_tier_is_its_own_wrap_around_pool() -> None:
    layout = tiered().tier_layout
    state = PoolState(layout.port_range, tiers=layout)
    assert state.allocate("a", now=0, tier="core").port == 9000
    assert state.allocate("b", now=0, tier="dev").port == 9040
    assert state.allocate("c", now=0).port == 9060
    assert state.allocate("d", now=0, tier="core").port == 9001
    assert state.cursors == {"core": 9001, "dev": 9040, UNTIERED: 9060}


def test_a_full_tier_is_exhausted_alone_and_says_which() -> None:
    layout = TierLayout(PortRange(100, 109), parse_tiers("small=100-101"))
    state = PoolState(layout.port_range, reserved={101}, tiers=layout)
    state.allocate("a", now=0, tier="small")
    with pytest.raises(PoolExhausted) as exc:
        state.allocate("b", now=0, tier="small")
    assert exc.value.tier == "small"
    assert "tier small (100-101) exhausted: all 2 ports are taken" in str(exc.value)
    assert "1 active" in str(exc.value) and "1 reserved" in str(exc.value)
    assert state.allocate("b", now=0).port == 102  # the rest of the range is not full
    state.release("a")
    assert state.allocate("b2", now=0, tier="small").port == 100  # recovered


def test_a_preferred_port_outside_the_tier_is_refused_naming_it() -> None:
    layout = tiered().tier_layout
    state = PoolState(layout.port_range, tiers=layout)
    with pytest.raises(PortOutsidePool, match=r"preferred port 9025 is not in tier core"):
        state.allocate("a", now=0, preferred=9025, tier="core")
    with pytest.raises(PortOutsidePool, match=r"not in the untiered ports \(9060-9099\)"):
        state.allocate("a", now=0, preferred=9025)


def test_reconfigured_tiers_leave_every_port_with_its_owner() -> None:
    before = tiered().tier_layout
    state = PoolState(before.port_range, tiers=before)
    held = state.allocate("mcp-a", now=0, tier="dev")
    after = TierLayout(before.port_range, parse_tiers("core=9000-9019,dev=9070-9079"))
    reopened = PoolState(after.port_range, allocations=state.allocations(), tiers=after)
    # Sticky: the same owner asking in its tier keeps the port now outside it.
    assert reopened.allocate("mcp-a", now=1, tier="dev").port == held.port == 9040
    assert reopened.allocate("mcp-b", now=1, tier="dev").port == 9070


# ---- mcp.tier ------------------------------------------------------------------------


def parse(settings: Settings, **labels: str) -> ServiceSpec | LabelError:
    container = make_container(labels={f"mcp.{k}": v for k, v in labels.items()})
    result = parse_labels(container, settings)
    assert result is not None
    return result


def test_the_tier_label_picks_the_block() -> None:
    spec = parse(tiered(), tier="business")
    assert isinstance(spec, ServiceSpec) and spec.tier == "business"
    untiered = parse(tiered())
    assert isinstance(untiered, ServiceSpec) and untiered.tier == UNTIERED


@pytest.mark.parametrize(
    ("settings_tiers", "labels", "label", "says"),
    [
        (TIERS, {"tier": "prod"}, "tier", "unknown tier; known: core, business, dev"),
        ("", {"tier": "core"}, "tier", "no tiers are configured (BRIDGE_PORT_TIERS)"),
        (
            TIERS,
            {"tier": "core", "expose": "internal"},
            "tier",
            "applies only to expose=proxy, and expose is internal here",
        ),
        (
            TIERS,
            {"tier": "core", "host_port": "9030"},
            "host_port",
            "must be inside tier core (9000-9019) (it is in tier business: set mcp.tier=business)",
        ),
        (TIERS, {"host_port": "9005"}, "host_port", "must be inside the untiered ports"),
    ],
)
def test_tier_label_errors_say_why(
    settings_tiers: str, labels: dict[str, str], label: str, says: str
) -> None:
    error = parse(make_settings(port_range="9000-9099", port_tiers=settings_tiers), **labels)
    assert isinstance(error, LabelError)
    assert error.label == f"mcp.{label}"
    assert says in error.reason


# ---- what lands in Consul and in status ----------------------------------------------


def desired(settings: Settings, port: int, **labels: str) -> ManagedService:
    spec = parse(settings, **labels)
    assert isinstance(spec, ServiceSpec)
    name = spec.container.name
    return desired_services(
        {name: spec},
        PoolOutcome(ports={name: port}),
        advertise="10.0.0.5",
        node_id="n1",
        probe_meta={},
        tiers=settings.tier_layout,
    ).services[name]


def test_the_tier_goes_to_meta_and_a_tag() -> None:
    managed = desired(tiered(), 9021, tier="business")
    assert managed.registration.meta["port_tier"] == "business"
    assert "tier-business" in managed.registration.tags
    assert managed.note is None
    plain = desired(tiered(), 9060)
    assert "port_tier" not in plain.registration.meta
    assert not [t for t in plain.registration.tags if t.startswith("tier-")]


def test_a_port_left_outside_its_tier_is_reported_not_moved() -> None:
    managed = desired(tiered(), 9045, tier="core")
    assert managed.registration.port == 9045
    assert managed.note is not None
    assert "port 9045 is outside tier core (9000-9019) (it is in tier dev)" in managed.note
    assert "set mcp.host_port to a free port of the tier" in managed.note
