"""Results between the eras (bridge/mcp/stdio/eras.py): a handshake-era result gets what
2026-07-28 requires, filled in by the SDK's models; one that is already of 2026-07-28 (a
modern upstream's, through the gateway) passes untouched, an input-required one too."""

from __future__ import annotations

from bridge.mcp.stdio.eras import to_modern_result


def test_a_handshake_result_gets_its_result_type_and_keeps_what_it_said() -> None:
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "extra": 1}}
    adapted = to_modern_result("tools/call", "2025-11-25", answer)
    assert adapted["result"]["resultType"] == "complete" and adapted["result"]["extra"] == 1


def test_a_result_already_of_2026_07_28_passes_as_it_is() -> None:
    for result in (
        {"content": [], "resultType": "complete"},
        {"resultType": "input_required", "requestState": "s", "inputRequests": {}},
    ):
        answer = {"jsonrpc": "2.0", "id": 1, "result": result}
        assert to_modern_result("tools/call", "2025-11-25", answer) is answer
