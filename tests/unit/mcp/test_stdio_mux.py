"""One stdio process shared by many clients (bridge/mcp/stdio/mux.py): each answer to the
client that asked, nothing pending left behind, a late answer from before a re-attach never
delivered. Named for the faults of the tools before it (fixed ids, a shared reply queue)."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bridge.mcp.stdio.mux import NOT_ROUTABLE, PROCESS_ENDED, TIMED_OUT, Mux


def req(rid: Any, method: str = "tools/call", **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


def answer_to(written: dict[str, Any], result: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": written["id"], "result": result or {}}


def test_two_clients_with_the_same_id_each_get_their_own_answer() -> None:
    mux = Mux("n1")
    a = mux.request("a", req(1, name="x")).to_server[0]
    b = mux.request("b", req(1, name="y")).to_server[0]
    assert a["id"] != b["id"] and a["params"] == {"name": "x"}
    out_b = mux.from_server(answer_to(b, {"for": "b"}))
    out_a = mux.from_server(answer_to(a, {"for": "a"}))
    assert [(d.client, d.message) for d in out_b.to_clients] == [
        ("b", {"jsonrpc": "2.0", "id": 1, "result": {"for": "b"}})
    ]
    assert [d.client for d in out_a.to_clients] == ["a"] and out_a.done == ["a"]
    assert not mux.pending


def test_an_answer_to_an_id_of_an_earlier_attach_is_dropped_and_counted() -> None:
    before = Mux("old")
    written = before.request("a", req(1)).to_server[0]
    after = Mux("new")  # the bridge restarted, or attached again
    after.request("b", req(1))
    assert after.from_server(answer_to(written)).to_clients == []
    assert after.stray == 1 and len(after.pending) == 1


def test_progress_goes_to_the_client_whose_request_carried_the_token() -> None:
    mux = Mux("n")
    a = mux.request("a", req(1, _meta={"progressToken": "t"})).to_server[0]
    mux.request("b", req(2, _meta={"progressToken": "t"}))
    ours = a["params"]["_meta"]["progressToken"]
    assert ours != "t"
    progress = {
        "method": "notifications/progress",
        "params": {"progressToken": ours, "progress": 1},
    }
    (delivery,) = mux.from_server({"jsonrpc": "2.0", **progress}).to_clients
    assert delivery.client == "a" and delivery.message["params"]["progressToken"] == "t"
    mux.from_server(answer_to(a))
    assert mux.from_server({"jsonrpc": "2.0", **progress}).to_clients == []  # over: nobody


def test_cancellation_is_rewritten_to_the_servers_id_and_only_for_the_clients_own() -> None:
    mux = Mux("n")
    a = mux.request("a", req(7)).to_server[0]
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
    assert mux.notify("b", cancel).to_server == []  # b has no request 7
    (sent,) = mux.notify("a", cancel).to_server
    assert sent["params"]["requestId"] == a["id"] and not mux.pending
    assert mux.from_server(answer_to(a)).to_clients == []  # a late answer after a cancel


def test_the_process_ending_answers_every_pending_request_at_once() -> None:
    mux = Mux("n")
    mux.request("a", req(1))
    mux.request("b", req("x"))
    out = mux.end("the server's process exited (code 137)")
    assert sorted((d.client, d.message["id"]) for d in out.to_clients) == [("a", 1), ("b", "x")]
    assert {d.message["error"]["code"] for d in out.to_clients} == {PROCESS_ENDED}
    assert "code 137" in out.to_clients[0].message["error"]["message"]
    assert not mux.pending


def test_a_request_past_its_time_is_answered_and_cancelled_at_the_server() -> None:
    mux = Mux("n")
    a = mux.request("a", req(1), now=0.0).to_server[0]
    mux.request("b", req(1), now=5.0)
    out = mux.expire(now=10.0, timeout=10.0)
    assert [(d.client, d.message["error"]["code"]) for d in out.to_clients] == [("a", TIMED_OUT)]
    assert out.to_server[0]["params"]["requestId"] == a["id"]
    assert len(mux.pending) == 1


def test_a_listen_stream_has_no_timeout_and_is_not_counted_in_flight() -> None:
    mux = Mux("n")
    mux.request("a", req(1, "subscriptions/listen"), now=0.0)
    mux.request(("mcp-bridge", "own"), req(2), now=0.0)
    mux.request("b", req(3), now=0.0)
    assert mux.in_flight() == 1  # b's call only
    out = mux.expire(now=1000.0, timeout=10.0)
    assert ("mcp-bridge", "own") in [d.client for d in out.to_clients]
    assert "a" not in [d.client for d in out.to_clients]  # the listen stays open


def test_a_disconnect_cancels_in_the_modern_era_only() -> None:
    mux = Mux("n")
    mux.open("a")
    mux.request("a", req(1))
    assert mux.close("a", cancel=False).to_server == [] and not mux.pending
    mux.open("b")
    b = mux.request("b", req(1)).to_server[0]
    (cancelled,) = mux.close("b", cancel=True).to_server
    assert cancelled["method"] == "notifications/cancelled"
    assert cancelled["params"]["requestId"] == b["id"]


def test_a_server_request_goes_to_the_one_client_it_can_concern() -> None:
    mux = Mux("n")
    mux.open("a", {"sampling"})
    mux.open("b", {"sampling"})
    mux.request("a", req(1))
    sampling = {"jsonrpc": "2.0", "id": 0, "method": "sampling/createMessage", "params": {}}
    (delivery,) = mux.from_server(sampling).to_clients
    assert delivery.client == "a" and delivery.message["id"] != 0
    assert mux.respond("b", answer_to(delivery.message)).to_server == []  # not b's
    (back,) = mux.respond("a", answer_to(delivery.message, {"role": "assistant"})).to_server
    assert back["id"] == 0 and back["result"] == {"role": "assistant"}


def test_a_server_request_nobody_can_answer_is_refused_at_once() -> None:
    mux = Mux("n")
    mux.open("a", {"sampling"})
    mux.open("b")
    sampling = {"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}}
    cases = []
    cases.append(mux.from_server(sampling))  # nobody has a request in flight
    mux.request("a", req(1))
    mux.request("b", req(1))
    cases.append(mux.from_server(sampling))  # two could be concerned
    mux2 = Mux("m")
    mux2.open("b")
    mux2.request("b", req(1))
    cases.append(mux2.from_server(sampling))  # b did not declare sampling
    for out in cases:
        (refusal,) = out.to_server
        assert out.to_clients == [] and refusal["id"] == 5
        assert refusal["error"]["code"] == NOT_ROUTABLE


def test_list_changes_go_to_every_listening_client() -> None:
    mux = Mux("n")
    mux.open("a", listens=True)
    mux.open("b")
    mux.open("c", listens=True)
    changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    assert sorted(d.client for d in mux.from_server(changed).to_clients) == ["a", "c"]


def test_news_of_a_listen_stream_goes_to_the_client_that_opened_it() -> None:
    mux = Mux("n")
    mux.open("a", listens=True)  # a listener of the connection's news: not this
    listen = req(5, "subscriptions/listen", notifications={"toolsListChanged": True})
    written = mux.request("b", listen).to_server[0]
    key = "io.modelcontextprotocol/subscriptionId"
    changed = {
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
        "params": {"_meta": {key: written["id"]}},
    }
    (delivery,) = mux.from_server(changed).to_clients
    assert delivery.client == "b" and delivery.message["params"]["_meta"][key] == 5
    assert changed["params"]["_meta"][key] == written["id"]  # the server's message untouched
    mux.from_server(answer_to(written))  # the listen is over
    assert mux.from_server(changed).to_clients == []


def test_the_clients_initialized_never_reaches_the_server() -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert Mux("n").notify("a", note).to_server == []


class SharedProcess(RuleBasedStateMachine):
    """Many clients with colliding ids, a server answering in any order (twice, or with
    ids it was never sent), the process ending and the bridge attaching again."""

    def __init__(self) -> None:
        super().__init__()
        self.attach = 0
        self.mux = Mux("a0")
        self.at_server: list[dict[str, Any]] = []  # written, not yet answered
        self.answered_before: list[dict[str, Any]] = []  # from earlier attaches
        self.asked: dict[tuple[str, Any], int] = {}  # (client, id) -> marker, pending
        self.marker = 0

    @rule(client=st.sampled_from("abc"), rid=st.sampled_from([1, 2, "1", "x"]))
    def request(self, client: str, rid: Any) -> None:
        if (client, rid) in self.asked:
            return  # a client never has two requests with one id in flight
        self.marker += 1
        self.asked[(client, rid)] = self.marker
        self.at_server += self.mux.request(client, req(rid, marker=self.marker)).to_server

    @precondition(lambda self: self.at_server)
    @rule(pick=st.integers(min_value=0), twice=st.booleans())
    def server_answers(self, pick: int, twice: bool) -> None:
        written = self.at_server.pop(pick % len(self.at_server))
        self.answered_before.append(written)
        for _ in range(2 if twice else 1):
            out = self.mux.from_server(answer_to(written, {"marker": written["params"]["marker"]}))
            for delivery in out.to_clients:
                key = (delivery.client, delivery.message["id"])
                assert self.asked.pop(key) == delivery.message["result"]["marker"]

    @precondition(lambda self: self.answered_before)
    @rule(pick=st.integers(min_value=0))
    def late_answer_from_an_earlier_attach(self, pick: int) -> None:
        written = self.answered_before[pick % len(self.answered_before)]
        assert self.mux.from_server(answer_to(written, {"marker": -1})).to_clients == []

    @rule()
    def process_ends_and_the_bridge_attaches_again(self) -> None:
        out = self.mux.end("restarted")
        for delivery in out.to_clients:
            del self.asked[(delivery.client, delivery.message["id"])]
        assert not self.asked  # every pending request was answered
        self.answered_before += self.at_server
        self.at_server = []
        self.attach += 1
        self.mux = Mux(f"a{self.attach}")

    @invariant()
    def pending_is_exactly_what_clients_wait_for(self) -> None:
        waiting = {(p.client, p.client_id) for p in self.mux.pending.values()}
        assert waiting == set(self.asked)


SharedProcess.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestSharedProcess = SharedProcess.TestCase
