"""The reconciler's pure core: deciding what to register and deregister.

Covers differs (when a desired registration must be written again) and plan (missing and
changed services registered, own stale ones removed, probation before the first full pass,
scope limits), with a property test that a plan applied once leaves nothing to do. Plain data
in, plain data out: no Docker, no Consul, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.model import MANAGED_BY, Registration
from bridge.core.reconcile import Plan, plan
from bridge.core.registration import FINGERPRINT, PROBE_META, differs
from tests.builders import ADVERTISE, NODE
from tests.reconcile_cases import PROBE, proxy_spec, register

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
