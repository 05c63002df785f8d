"""Reading a server's slots: llama-server's /props and /slots, vLLM's /metrics, as the servers
really answer, and whatever else comes back (never an exception, never a silly figure); the
background prober: cached, at most one probe per TTL, never waited for."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from starcoder_router._fleet import (
    ServerSlots,
    SlotProber,
    parse_llama_props,
    parse_llama_slots,
    parse_vllm_metrics,
    probe_urls,
)
from starcoder_router._fleet.slots import MAX_SLOTS

HERE = Path(__file__).parent
LLAMA_FIXTURES = HERE.parent / "local_servers" / "fixtures" / "llamacpp"


def _slot(i: int, busy: bool) -> dict[str, object]:
    # The shape of llama.cpp tools/server/server-context.cpp `server_slot::to_json`.
    return {"id": i, "n_ctx": 1024, "speculative": False, "is_processing": busy,
            "id_task": 7 + i, "n_prompt_tokens": 30, "n_prompt_tokens_processed": 2,
            "n_prompt_tokens_cache": 28, "params": {"n_predict": 4, "temperature": 0.0},
            "next_token": [{"has_next_token": busy, "has_new_line": False, "n_remain": 2,
                            "n_decoded": 2}]}


def test_llama_props_as_captured_from_a_real_server() -> None:
    body = (LLAMA_FIXTURES / "props.json").read_bytes()
    assert parse_llama_props(body) == ServerSlots(total=1)


def test_llama_slots_as_captured_from_a_real_server() -> None:
    # `-np 2`, one request in flight: an idle slot lists only its id, window and state.
    body = (HERE / "fixtures" / "llama_slots.json").read_bytes()
    assert parse_llama_slots(body) == ServerSlots(total=2, busy=1)


def test_llama_slots_count_busy_ones() -> None:
    body = json.dumps([_slot(0, True), _slot(1, False), _slot(2, True)]).encode()
    assert parse_llama_slots(body) == ServerSlots(total=3, busy=2)


def test_vllm_metrics_running_and_waiting() -> None:
    text = (HERE / "fixtures" / "vllm_metrics.txt").read_bytes()
    assert parse_vllm_metrics(text) == ServerSlots(busy=3, waiting=2)


def test_vllm_metrics_sum_over_engines_and_take_unlabelled_lines() -> None:
    text = ('vllm:num_requests_running{engine="0"} 1\nvllm:num_requests_running{engine="1"} 2\n'
            "vllm:num_requests_waiting 0\n")
    assert parse_vllm_metrics(text) == ServerSlots(busy=3, waiting=0)


def test_malformed_replies_are_refused() -> None:
    for body in (b"", b"null", b"[]", b"{}", b'{"total_slots": true}', b'{"total_slots": -1}',
                 b'{"total_slots": 1e9}', b'{"total_slots": 0}', b"<html>", b"[" * 100000):
        assert parse_llama_props(body) is None, body[:20]
    for body in (b"", b"{}", b"[]", b'[{"id": 0}]', b'[{"is_processing": 1}]', b"[1, 2]"):
        assert parse_llama_slots(body) is None, body
    for text in ("", "# only comments\n", "vllm:num_requests_running{broken 3\n",
                 "vllm:num_requests_running NaN\n", "vllm:num_requests_running -1\n",
                 "vllm:num_requests_running inf\n", "vllm:num_requests_waiting 3\n"):
        assert parse_vllm_metrics(text) is None, text


def _bounded(found: ServerSlots | None) -> None:
    if found is None:
        return
    for v in found:
        assert v is None or (isinstance(v, int) and 0 <= v <= MAX_SLOTS)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused(body: bytes) -> None:
    for parse in (parse_llama_props, parse_llama_slots, parse_vllm_metrics):
        _bounded(parse(body))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["total_slots", "is_processing", "id", "x"]), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_any_json_parses_or_is_refused(value: object) -> None:
    body = json.dumps(value).encode()
    _bounded(parse_llama_props(body))
    _bounded(parse_llama_slots(body))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:other",
                     "#", ""]),
    st.sampled_from(["", '{model_name="m"}', "{", '{a="}"}']),
    st.sampled_from(["1", "2.5", "-3", "x", "1e400", "", "0 1700000000"])), max_size=8))
def test_any_metrics_text_parses_or_is_refused(lines: list[tuple[str, str, str]]) -> None:
    _bounded(parse_vllm_metrics("\n".join(f"{n}{labels} {v}" for n, labels, v in lines)))


def test_probe_urls_per_provider() -> None:
    assert [u for u, _ in probe_urls("llamacpp", "http://h:8080")] == [
        "http://h:8080/slots", "http://h:8080/props"]
    assert [u for u, _ in probe_urls("vllm", "http://h:8000/v1/")] == ["http://h:8000/metrics"]
    assert probe_urls("ollama", "http://h:11434") == ()  # OLLAMA_NUM_PARALLEL: `parallel`
    assert probe_urls("llamacpp", None) == ()


class _Server:
    """A fake fetch: answers per URL, counts calls, can hang until released."""

    def __init__(self, replies: dict[str, bytes | Exception], hang: bool = False):
        self.replies = replies
        self.calls: list[str] = []
        self.release = threading.Event()
        self.hang = hang

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls.append(url)
        if self.hang:
            self.release.wait(5)
        reply = self.replies.get(url, OSError("refused"))
        if isinstance(reply, Exception):
            raise reply
        return reply


def _wait(predicate, limit: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_the_prober_never_waits_and_probes_once_per_ttl() -> None:
    now = [0.0]
    server = _Server({"http://a/props": (LLAMA_FIXTURES / "props.json").read_bytes()},
                     hang=True)
    prober = SlotProber(ttl_s=5.0, timeout_s=0.2, now=lambda: now[0], fetch=server)
    try:
        started = time.monotonic()
        for _ in range(50):
            assert prober.get("a", "llamacpp", "http://a") is None  # nothing known yet
        assert time.monotonic() - started < 1.0  # the hanging probe held nobody
        server.release.set()
        _wait(lambda: prober.get("a", "llamacpp", "http://a") is not None)
        assert prober.get("a", "llamacpp", "http://a") == ServerSlots(total=1)
        # /slots refused (404 or --no-slots), /props answered: one probe of each.
        assert server.calls == ["http://a/slots", "http://a/props"]
        now[0] = 4.9
        prober.get("a", "llamacpp", "http://a")
        time.sleep(0.05)
        assert len(server.calls) == 2  # still fresh
        now[0] = 5.0
        prober.get("a", "llamacpp", "http://a")
        _wait(lambda: len(server.calls) == 4)
    finally:
        prober.close()


def test_a_failed_probe_is_cached_too_and_close_stops_the_worker() -> None:
    server = _Server({"http://a/slots": b"not json", "http://a/props": ValueError("bad")})
    prober = SlotProber(ttl_s=60.0, timeout_s=0.2, now=time.monotonic, fetch=server)
    prober.get("a", "llamacpp", "http://a")
    _wait(lambda: len(server.calls) == 2)
    time.sleep(0.05)
    assert prober.get("a", "llamacpp", "http://a") is None
    assert len(server.calls) == 2  # not retried on every request
    thread = prober._thread
    prober.close()
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    prober.get("b", "llamacpp", "http://b")  # after close: no new worker
    assert prober._thread is None
