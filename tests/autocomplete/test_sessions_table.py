"""The session table without I/O: key derivation, typed-ahead matching, supersession and the
bounds of the cache and of sessions, with properties for what clients control (prompts, the
session header)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from starcoder_router import AutocompletePolicy, CompletionRequest
from starcoder_router._autocomplete.cache import CompletionCache
from starcoder_router._autocomplete.keys import (
    HEAD_CHARS,
    MAX_KEY_CHARS,
    MIN_STABLE,
    TAIL_CHARS,
    derived_key,
    given_key,
)
from starcoder_router._autocomplete.sessions import SessionTable

text = st.text(max_size=60)


class Answer:
    """What the table keeps of a completion: its text (the routers keep a `Completion`)."""

    def __init__(self, text: str):
        self.text = text


def fim(prefix: str, suffix: str = "\n", **kw: Any) -> CompletionRequest:
    return CompletionRequest(**{"prefix": prefix, "suffix": suffix, "session": "s",
                                "max_tokens": 16, **kw})


def finish(table: SessionTable, begin: Any, answer: str) -> None:
    table.finish(begin, Answer(answer), answer, True, True, 0.0)


@given(prefix=text, suffix=text, completion=st.text(min_size=1, max_size=40),
       k=st.integers(min_value=1, max_value=40))
def test_reused_text_is_what_the_completion_goes_on_with(prefix: str, suffix: str,
                                                         completion: str, k: int) -> None:
    table = SessionTable(AutocompletePolicy())
    begin = table.begin(fim(prefix, suffix), 0.0)
    assert begin.served is None
    finish(table, begin, completion)
    typed = completion[:k]
    again = table.begin(fim(prefix + typed, suffix), 1.0)
    if k < len(completion):
        assert again.served is not None
        earlier, stripped, source = again.served
        assert source == "reuse"
        assert stripped == typed
        assert earlier.text[len(stripped):] == completion[k:]
    else:  # typed all of it: nothing left to suggest, ask again
        assert again.served is None


@given(prefix=text, completion=st.text(min_size=2, max_size=40), typed=st.text(min_size=1,
                                                                              max_size=5))
def test_other_typing_or_another_suffix_is_never_reused(prefix: str, completion: str,
                                                         typed: str) -> None:
    table = SessionTable(AutocompletePolicy())
    finish(table, table.begin(fim(prefix), 0.0), completion)
    other_suffix = table.begin(fim(prefix + completion[:1], suffix="\nx = 1\n"), 1.0)
    assert other_suffix.served is None
    again = table.begin(fim(prefix + typed), 1.0)
    assert (again.served is not None) == (completion.startswith(typed)
                                          and len(typed) < len(completion))


def test_reuse_needs_the_same_parameters_and_a_recent_answer() -> None:
    table = SessionTable(AutocompletePolicy(reuse_window_s=10))
    finish(table, table.begin(fim("x = "), 0.0), "foo(1)")
    assert table.begin(fim("x = f", max_tokens=99), 1.0).served is None
    assert table.begin(fim("x = f"), 11.0).served is None  # too old
    off = CompletionRequest(prefix="x = f", suffix="\n", session="off", max_tokens=16)
    assert table.begin(off, 1.0).served is None


def test_a_newer_request_supersedes_the_running_one_but_not_its_repeat() -> None:
    table = SessionTable(AutocompletePolicy())
    first = table.begin(fim("a"), 0.0)
    repeat = table.begin(fim("a"), 0.0)
    assert first.ticket is not None
    assert repeat.ticket is not None
    assert not first.ticket.superseded  # the same request again: the editor did not move
    aborted: list[str] = []
    first.ticket.bind(lambda: aborted.append("first"))
    newer = table.begin(fim("ab"), 0.0)
    assert first.ticket.superseded
    assert repeat.ticket.superseded
    assert aborted == ["first"]
    assert newer.ticket is not None
    assert not newer.ticket.superseded
    other = CompletionRequest(prefix="zzz", suffix="\n", session="t", max_tokens=16)
    table.begin(other, 0.0)  # another session
    assert not newer.ticket.superseded
    tenant = CompletionRequest(prefix="q", suffix="\n", session="s", tenant="b", max_tokens=16)
    table.begin(tenant, 0.0)  # the same name in another tenant is another session
    assert not newer.ticket.superseded


def test_a_running_request_is_followed_when_its_text_begins_with_the_typing() -> None:
    table = SessionTable(AutocompletePolicy())
    leader = table.begin(fim("x = "), 0.0)
    assert leader.ticket is not None
    leader.ticket.tap.push("foo")
    follow = table.begin(fim("x = fo"), 0.0)
    assert follow.follow is not None
    assert follow.follow.leader is leader.ticket
    assert follow.follow.typed == "fo"
    assert not leader.ticket.superseded
    # typed past what the leader has produced so far: it cannot tell yet, so it supersedes
    table.begin(fim("x = foo("), 0.0)
    assert leader.ticket.superseded


def test_sessions_off_keeps_every_request() -> None:
    table = SessionTable(AutocompletePolicy(sessions=False))
    first = table.begin(fim("a"), 0.0)
    table.begin(fim("ab"), 0.0)
    assert first.ticket is not None
    assert not first.ticket.superseded


def test_sessions_are_bounded() -> None:
    table = SessionTable(AutocompletePolicy(max_sessions=3))
    for i in range(10):
        table.begin(CompletionRequest(prefix=f"{i}", session=f"s{i}", max_tokens=4), 0.0)
    assert len(table._sessions) == 3


def test_the_cache_is_bounded_by_entries_and_bytes() -> None:
    cache: CompletionCache[str] = CompletionCache(entries=3, max_bytes=10_000)
    for i in range(5):
        cache.put(b"k%d" % i, f"v{i}", "x" * 10)
    assert len(cache) == 3
    assert cache.get(b"k0") is None
    assert cache.get(b"k4") == "v4"
    small: CompletionCache[str] = CompletionCache(entries=100, max_bytes=3000)
    for i in range(10):
        small.put(b"k%d" % i, "v", "y" * 100)
    assert 2 <= len(small) < 10
    assert small.size_bytes <= 3000
    assert small.get(b"k9") == "v"
    small.put(b"huge", "v", "z" * 5000)  # larger than the whole cache: not kept
    assert small.get(b"huge") is None


def test_the_cache_keeps_only_deterministic_requests() -> None:
    table = SessionTable(AutocompletePolicy(cache_entries=8))
    greedy = CompletionRequest(prompt="def f(", temperature=0, max_tokens=8)
    begin = table.begin(greedy, 0.0)
    assert begin.cache_key is not None
    finish(table, begin, "x)")
    hit = table.begin(greedy, 1.0)
    assert hit.served is not None
    assert hit.served[2] == "cache"
    assert table.begin(greedy.model_copy(update={"tenant": "other"}), 1.0).served is None
    sampled = CompletionRequest(prompt="def f(", temperature=0.5, max_tokens=8)
    assert table.begin(sampled, 0.0).cache_key is None
    top_k = CompletionRequest(prompt="def f(", extra_body={"top_k": 1}, max_tokens=8)
    assert table.begin(top_k, 0.0).cache_key is not None


# -- the gateway's session keys ---------------------------------------------------------------

line = st.text(st.characters(blacklist_characters="\n"), max_size=30)


@given(head=st.text(max_size=HEAD_CHARS + 40), cursor_line=line, typed=text, suffix=text,
       cut=st.integers(min_value=0, max_value=20))
def test_a_derived_key_does_not_change_while_typing_at_the_cursor(
        head: str, cursor_line: str, typed: str, suffix: str, cut: int) -> None:
    tail = "z" * TAIL_CHARS
    prefix = head + "\n" + cursor_line
    before = derived_key({"prefix": prefix, "suffix": suffix + tail})
    assert before is not None
    assert before != derived_key({"prefix": "#" + prefix, "suffix": suffix + tail})
    assert before != derived_key({"prefix": prefix, "suffix": suffix + tail}, "10.0.0.2")
    # typing on the cursor's line; what follows the cursor may shrink at its start
    on_line = typed.replace("\n", "")
    assert before == derived_key({"prefix": prefix + on_line, "suffix": suffix[cut:] + tail})
    # new lines too, once the file's head is long enough
    if len(head) >= HEAD_CHARS:
        assert before == derived_key({"prefix": prefix + typed, "suffix": suffix + tail})


@given(prompt=st.text(max_size=HEAD_CHARS + 100))
def test_every_prompt_gets_a_short_key(prompt: str) -> None:
    key = derived_key({"prompt": prompt})
    if key is None:  # too little that stays the same while typing
        assert len(prompt[:prompt.rfind("\n") + 1]) < MIN_STABLE
        return
    assert len(key) < 40
    assert prompt[:20] not in key or not prompt[:20].strip() or len(prompt[:20]) < 3
    assert derived_key({"messages": [{"role": "user", "content": prompt}]}) is None


@given(header=st.text(max_size=400))
def test_a_named_session_is_short_and_printable(header: str) -> None:
    key = given_key(header)
    if header.strip().lower() == "off":
        assert key is False
    elif not header.strip():
        assert key is None
    else:
        assert isinstance(key, str)
        assert len(key) <= MAX_KEY_CHARS + 2
        assert key.isprintable()
        CompletionRequest(prompt="x", session=key)  # a valid session for the router


def test_typing_more_than_the_bound_is_not_reused() -> None:
    from starcoder_router._autocomplete.reuse import MAX_TYPED

    table = SessionTable(AutocompletePolicy())
    answer = "x" * (MAX_TYPED + 10)
    finish(table, table.begin(fim("a = "), 0.0), answer)
    assert table.begin(fim("a = " + answer[:MAX_TYPED]), 1.0).served is not None
    assert table.begin(fim("a = " + answer[:MAX_TYPED + 1]), 1.0).served is None


def test_the_autocomplete_table_of_a_config_file(tmp_path: Any) -> None:
    import pytest

    from starcoder_router import ConfigError, Router
    from starcoder_router._config import load_config
    from starcoder_router._server.autocomplete import GATEWAY_CACHE_ENTRIES, gateway_policy

    path = tmp_path / "router.toml"
    path.write_text("[autocomplete]\nsessions = false\nreuse_window_s = 5\n")
    policy = load_config(path).autocomplete
    assert policy is not None
    assert (policy.sessions, policy.reuse, policy.reuse_window_s) == (False, True, 5.0)
    assert policy.cache_entries == 0  # the SDK's default
    assert gateway_policy(policy).cache_entries == GATEWAY_CACHE_ENTRIES  # the gateway's
    assert gateway_policy(None).sessions
    with Router.from_config(path, env={}, tokenizer=False) as router:
        assert router._sessions.table.policy == policy
    path.write_text("[autocomplete]\ncache_entries = 0\n")
    assert gateway_policy(load_config(path).autocomplete).cache_entries == 0
    path.write_text("[autocomplete]\nsesions = true\n")
    with pytest.raises(ConfigError, match="sesions"):
        load_config(path)
