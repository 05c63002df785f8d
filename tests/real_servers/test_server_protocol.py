"""What llama-server actually sends, pinned with raw HTTP against the real server.

The provider adapters are written against these facts; if a llama.cpp upgrade changes one, the
test that fails names the fact. Assertions are loose about extra fields and exact about the ones
the adapters read.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenizers import Tokenizer

PROMPT = "def hello_world():\n    "
FIM_PREFIX = "def add(a, b):\n    "
FIM_SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_path))


@pytest.fixture
def client(llama_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llama_server.base_url, timeout=30) as c:
        yield c


@pytest.fixture
def constant_client(llama_server_constant: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llama_server_constant.base_url, timeout=30) as c:
        yield c


def n_tokens(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def post_json(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def sse_payloads(client: httpx.Client, path: str, body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of an SSE response, in order (comment lines skipped)."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line.removeprefix("data: ") for line in lines]


# --- /v1/completions ---------------------------------------------------------------------------


def test_v1_completion_reply_has_text_usage_and_finish_reason_length(
    client: httpx.Client, llama_server: Any, tokenizer: Tokenizer
) -> None:
    data = post_json(
        client, "/v1/completions", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    )

    assert data["object"] == "text_completion"
    assert data["model"] == llama_server.model_id
    assert isinstance(data["id"], str)
    assert isinstance(data["created"], int)
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert isinstance(choice["text"], str)
    assert choice["finish_reason"] == "length"
    assert choice["logprobs"] is None
    usage = data["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["prompt_tokens"] == n_tokens(tokenizer, PROMPT)
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8
    assert data["timings"]["predicted_n"] == 8


@pytest.mark.parametrize("bias", [{"0": 100}, [[0, 100]]], ids=["object", "pairs"])
def test_logit_bias_on_eos_ends_with_finish_reason_stop(client: httpx.Client, bias: Any) -> None:
    data = post_json(
        client, "/v1/completions", {"prompt": PROMPT, "max_tokens": 8, "logit_bias": bias}
    )

    [choice] = data["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == ""
    # The EOS token is counted as a completion token.
    assert data["usage"]["completion_tokens"] == 1


def test_v1_completion_ignores_suffix_and_echo(client: httpx.Client) -> None:
    # FIM through OpenAI's `suffix` is silently dropped, so adapters must use /infill or build the
    # <fim_prefix>... prompt themselves.
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    plain = post_json(client, "/v1/completions", body)
    extra = post_json(client, "/v1/completions", {**body, "suffix": "\n", "echo": True})

    assert extra["choices"][0]["text"] == plain["choices"][0]["text"]
    assert extra["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_v1_stream_ends_with_a_finish_chunk_carrying_usage_then_done(
    client: httpx.Client, llama_server: Any
) -> None:
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0}
    whole = post_json(client, "/v1/completions", body)  # first: streams end the connection
    payloads = sse_payloads(client, "/v1/completions", {**body, "stream": True})

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    *deltas, final = chunks
    for chunk in deltas:
        [choice] = chunk["choices"]
        assert choice["finish_reason"] is None
        assert "usage" not in chunk
    assert final["object"] == "text_completion"
    assert final["model"] == llama_server.model_id
    assert len({c["id"] for c in chunks}) == 1
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 6
    assert final["timings"]["predicted_n"] == 6
    # Streamed text adds up to the non-streamed text.
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]


@pytest.mark.parametrize("include_usage", [None, True, False])
def test_stream_options_include_usage_changes_nothing(
    client: httpx.Client, include_usage: bool | None
) -> None:
    # Unlike OpenAI there is never a separate usage chunk with empty `choices`: usage always rides
    # on the finish chunk, even when include_usage is false.
    body: dict[str, Any] = {"prompt": PROMPT, "max_tokens": 3, "stream": True}
    if include_usage is not None:
        body["stream_options"] = {"include_usage": include_usage}
    chunks = [json.loads(p) for p in sse_payloads(client, "/v1/completions", body)[:-1]]

    assert all(len(c["choices"]) == 1 for c in chunks)
    with_usage = [c for c in chunks if "usage" in c]
    assert with_usage == [chunks[-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def connection_closed_after(server: Any, body: dict[str, Any]) -> tuple[bool, str | None]:
    """Send one /completion request over a raw keep-alive connection and read the whole reply.
    Returns whether the server then closed the connection, and its Keep-Alive header."""
    url = httpx.URL(server.base_url)
    assert url.port is not None
    conn = http.client.HTTPConnection(url.host, url.port, timeout=10)
    try:
        conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert conn.sock is not None
        conn.sock.settimeout(0.5)
        try:
            closed = conn.sock.recv(1, socket.MSG_PEEK) == b""
        except TimeoutError:
            closed = False
        return closed, response.getheader("Keep-Alive")
    finally:
        conn.close()


def test_server_closes_the_connection_after_a_stream_despite_keep_alive(
    llama_server: Any,
) -> None:
    # A pooled HTTP client that reuses the connection after a stream can get "server
    # disconnected without sending a response" on its next request: adapters must expect it.
    body = {"prompt": PROMPT, "n_predict": 2}
    closed, keep_alive = connection_closed_after(llama_server, {**body, "stream": True})
    assert closed
    assert keep_alive is not None  # it still says "Keep-Alive: timeout=5, max=100"
    assert connection_closed_after(llama_server, body)[0] is False


# --- native /completion ------------------------------------------------------------------------


def test_native_completion_reply(
    client: httpx.Client, llama_server: Any, tokenizer: Tokenizer
) -> None:
    data = post_json(client, "/completion", {"prompt": PROMPT, "n_predict": 5, "temperature": 0})

    assert isinstance(data["content"], str)
    assert data["stop"] is True
    assert data["stop_type"] == "limit"
    assert data["stopping_word"] == ""
    assert data["tokens_predicted"] == 5
    assert data["tokens_evaluated"] == n_tokens(tokenizer, PROMPT)
    assert data["truncated"] is False
    assert data["tokens"] == []  # only filled with "return_tokens": true
    assert data["model"] == llama_server.model_id
    assert data["prompt"] == PROMPT
    assert data["timings"]["predicted_n"] == 5
    assert isinstance(data["tokens_cached"], int)


def test_native_completion_stop_type_eos(client: httpx.Client) -> None:
    data = post_json(
        client, "/completion", {"prompt": PROMPT, "n_predict": 5, "logit_bias": [[0, 100]]}
    )

    assert data["stop_type"] == "eos"
    assert data["content"] == ""
    assert data["tokens_predicted"] == 1


def test_native_stream_has_no_done_line_and_ends_with_stop_true(
    client: httpx.Client, tokenizer: Tokenizer
) -> None:
    body = {"prompt": PROMPT, "n_predict": 4, "temperature": 0}
    whole = post_json(client, "/completion", body)  # first: streams end the connection
    payloads = sse_payloads(client, "/completion", {**body, "stream": True})

    assert "[DONE]" not in payloads
    *deltas, final = [json.loads(p) for p in payloads]
    assert deltas
    for i, chunk in enumerate(deltas, start=1):
        assert chunk["stop"] is False
        assert isinstance(chunk["content"], str)
        assert len(chunk["tokens"]) == 1
        assert chunk["tokens_predicted"] == i
    assert final["stop"] is True
    assert final["stop_type"] == "limit"
    assert final["tokens_predicted"] == 4
    assert final["tokens_evaluated"] == n_tokens(tokenizer, PROMPT)
    assert "timings" in final
    assert "".join(c["content"] for c in deltas) + final["content"] == whole["content"]


# --- /infill -----------------------------------------------------------------------------------


def psm(prefix: str, suffix: str) -> str:
    return f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"


def test_infill_builds_the_psm_prompt(client: httpx.Client, tokenizer: Tokenizer) -> None:
    data = post_json(
        client,
        "/infill",
        {"input_prefix": FIM_PREFIX, "input_suffix": FIM_SUFFIX, "n_predict": 3, "temperature": 0},
    )

    assert data["prompt"] == psm(FIM_PREFIX, FIM_SUFFIX)
    assert data["tokens_evaluated"] == n_tokens(tokenizer, data["prompt"])
    assert data["tokens_predicted"] == 3
    assert data["stop"] is True
    assert data["stop_type"] == "limit"


def test_infill_prompt_field_is_appended_to_the_prefix(client: httpx.Client) -> None:
    # Not placed after <fim_middle>: it continues the prefix.
    data = post_json(
        client,
        "/infill",
        {"input_prefix": "def f():\n", "input_suffix": "\n", "prompt": "    ret", "n_predict": 1},
    )

    assert data["prompt"] == psm("def f():\n    ret", "\n")


def test_infill_extra_context_is_cut_to_n_ctx_minus_n_batch(client: httpx.Client) -> None:
    # The budget for input_extra is n_ctx - n_batch - 2 * n_predict, with the server's default
    # n_predict (-1), and the *start* of the extra text is dropped. At -c 2048 and the default
    # -b 2048 that leaves 2 tokens: the tail " z\n" of the snippet below.
    extra = [{"filename": "util.py", "text": " ".join("abcdefghijklmnopqrstuvwxyz") + "\n"}]
    data = post_json(
        client,
        "/infill",
        {"input_prefix": "P", "input_suffix": "S", "input_extra": extra, "n_predict": 1},
    )

    assert data["prompt"] == " z\n" + psm("P", "S")


def test_infill_extra_context_goes_before_the_prefix_without_filenames(
    start_llama_server: Any, tiny_gguf: Path, tokenizer: Tokenizer
) -> None:
    # With a smaller batch the extra context fits. Our StarCoder 2 model declares no fim_sep
    # token (neither do GGUFs converted from the HF checkpoints), so chunks are joined with a
    # "--- snippet ---" line and their filenames are dropped.
    server = start_llama_server(tiny_gguf, "-b", "512")
    extra = [
        {"filename": "util.py", "text": "X = 1\n"},
        {"filename": "more.py", "text": "Y = 2\n"},
    ]
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        data = post_json(
            c,
            "/infill",
            {
                "input_prefix": FIM_PREFIX,
                "input_suffix": FIM_SUFFIX,
                "input_extra": extra,
                "n_predict": 2,
            },
        )

    separator = "\n\n--- snippet ---\n\n"
    assert data["prompt"] == "".join(separator + c["text"] for c in extra) + psm(
        FIM_PREFIX, FIM_SUFFIX
    )
    # Each piece is tokenized on its own, so the count can differ from tokenizing the echo.
    pieces = [separator, extra[0]["text"], separator, extra[1]["text"], FIM_PREFIX, FIM_SUFFIX]
    fim_tokens = 3
    assert data["tokens_evaluated"] == fim_tokens + sum(n_tokens(tokenizer, p) for p in pieces)


# --- /tokenize ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "def hello_world():\n    print('hi')",
        psm("def f(x):\n    ", "\n    return y"),
        "<repo_name>proj<file_sep>a.py\nx = 1234567\n<|endoftext|>",
        "    \t\n\n  naïve — ünïcödé 😀 日本語",
        "",
    ],
    ids=["code", "fim", "repo", "unicode", "empty"],
)
def test_tokenize_matches_the_real_tokenizer(
    client: httpx.Client, tokenizer: Tokenizer, text: str
) -> None:
    data = post_json(client, "/tokenize", {"content": text})

    assert data["tokens"] == tokenizer.encode(text, add_special_tokens=False).ids


def test_tokenize_parses_special_tokens(client: httpx.Client) -> None:
    assert post_json(client, "/tokenize", {"content": "<fim_prefix>"})["tokens"] == [1]
    pieces = post_json(client, "/tokenize", {"content": "<fim_prefix>def", "with_pieces": True})
    assert pieces["tokens"] == [{"id": 1, "piece": "<fim_prefix>"}, {"id": 610, "piece": "def"}]
    literal = post_json(client, "/tokenize", {"content": "<fim_prefix>", "parse_special": False})
    assert 1 not in literal["tokens"]


def test_detokenize(client: httpx.Client) -> None:
    assert post_json(client, "/detokenize", {"tokens": [1, 610]}) == {"content": "<fim_prefix>def"}


# --- /props, /v1/models, /slots ----------------------------------------------------------------


def test_props_report_n_ctx_and_special_tokens(client: httpx.Client, llama_server: Any) -> None:
    data = client.get("/props").json()

    assert data["default_generation_settings"]["n_ctx"] == llama_server.n_ctx == 2048
    assert data["total_slots"] == 1
    assert data["bos_token"] == data["eos_token"] == "<|endoftext|>"
    assert isinstance(data["build_info"], str)


def test_v1_models_report_the_model_path_and_n_ctx(
    client: httpx.Client, llama_server: Any, tiny_gguf: Path
) -> None:
    data = client.get("/v1/models").json()

    assert data["object"] == "list"
    [model] = data["data"]
    assert model["id"] == llama_server.model_id == str(tiny_gguf)
    assert model["object"] == "model"
    assert model["owned_by"] == "llamacpp"
    meta = model["meta"]
    assert meta["n_ctx"] == 2048
    assert meta["n_ctx_train"] == 4096
    assert meta["n_vocab"] == 49152
    assert meta["vocab_type"] == 2  # BPE


# --- context overflow --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "limit_field"), [("/v1/completions", "max_tokens"), ("/completion", "n_predict")]
)
def test_prompt_longer_than_context_is_a_400(
    client: httpx.Client, tokenizer: Tokenizer, path: str, limit_field: str
) -> None:
    prompt = "a b " * 1500
    response = client.post(path, json={"prompt": prompt, limit_field: 4})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["code"] == 400
    assert error["n_prompt_tokens"] == n_tokens(tokenizer, prompt)
    assert error["n_ctx"] == 2048
    assert "exceeds the available context size" in error["message"]


def test_context_limit_is_on_the_prompt_alone(client: httpx.Client) -> None:
    # A prompt of n_ctx tokens is refused; one token fewer is accepted and generation simply
    # stops at the end of the context, however many tokens were asked for.
    full = client.post("/completion", json={"prompt": [610] * 2048, "n_predict": 8})
    assert full.status_code == 400
    assert full.json()["error"]["n_prompt_tokens"] == 2048

    almost = post_json(client, "/v1/completions", {"prompt": [610] * 2046, "max_tokens": 8})
    assert almost["usage"] == {**almost["usage"], "prompt_tokens": 2046, "completion_tokens": 2}
    assert almost["choices"][0]["finish_reason"] == "length"


# --- cancellation ------------------------------------------------------------------------------


def test_closing_a_stream_cancels_the_generation(client: httpx.Client) -> None:
    max_tokens = 2000
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 5:
                break
    closed = time.monotonic()

    deadline = closed + 10
    while client.get("/slots").json()[0]["is_processing"]:
        assert time.monotonic() < deadline, "slot still busy 10 s after the client went away"
        time.sleep(0.02)
    idle_after = time.monotonic() - closed

    follow_up = post_json(client, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4})
    assert follow_up["usage"]["completion_tokens"] == 4
    # Generating the rest would have taken far longer than the slot took to free up.
    per_token_s = follow_up["timings"]["predicted_per_token_ms"] / 1000
    assert idle_after < 0.5 * (max_tokens - seen) * per_token_s


# --- constant model: exact text and stop strings -----------------------------------------------


def test_constant_model_repeats_one_token_whatever_the_sampler(
    constant_client: httpx.Client,
) -> None:
    for sampling in ({}, {"temperature": 0}, {"temperature": 1.5, "top_k": 0, "seed": 7}):
        data = post_json(
            constant_client, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6, **sampling}
        )
        assert data["choices"][0]["text"] == " x" * 6


@pytest.mark.parametrize(("stop", "text"), [(" x x x", ""), ("x x x", " ")])
def test_stop_string_ends_with_finish_reason_stop_and_is_cut_off(
    constant_client: httpx.Client, stop: str, text: str
) -> None:
    data = post_json(
        constant_client, "/v1/completions", {"prompt": PROMPT, "max_tokens": 20, "stop": [stop]}
    )

    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["choices"][0]["text"] == text
    assert data["usage"]["completion_tokens"] == 3


def test_native_stop_string_reports_the_word(constant_client: httpx.Client) -> None:
    data = post_json(
        constant_client, "/completion", {"prompt": PROMPT, "n_predict": 20, "stop": [" x x x"]}
    )

    assert data["stop_type"] == "word"
    assert data["stopping_word"] == " x x x"
    assert data["content"] == ""
    assert data["tokens_predicted"] == 3


def test_streamed_stop_string_ends_with_finish_reason_stop(constant_client: httpx.Client) -> None:
    body = {"prompt": PROMPT, "max_tokens": 20, "stop": ["x x x"], "stream": True}
    chunks = [json.loads(p) for p in sse_payloads(constant_client, "/v1/completions", body)[:-1]]

    assert "".join(c["choices"][0]["text"] for c in chunks) == " "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_stream_drops_a_partial_stop_string_match_at_the_length_limit(
    constant_client: httpx.Client,
) -> None:
    # Text that might be the start of a stop string is held back while streaming. If the length
    # limit comes first, the non-streamed reply returns it but the stream never sends it.
    body = {"prompt": PROMPT, "max_tokens": 2, "stop": [" x x x"]}
    whole = post_json(constant_client, "/v1/completions", body)
    chunks = [
        json.loads(p)
        for p in sse_payloads(constant_client, "/v1/completions", {**body, "stream": True})[:-1]
    ]

    assert whole["choices"][0] == {**whole["choices"][0], "text": " x x", "finish_reason": "length"}
    assert "".join(c["choices"][0]["text"] for c in chunks) == ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


# --- recorded fixtures -------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "local_servers" / "fixtures" / "llamacpp"
RECORDED: dict[str, Any] = json.loads((FIXTURES / "requests.json").read_text("utf-8"))["captures"]


def field_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path in a JSON value, e.g. {"choices[].text", "usage.total_tokens", ...}."""
    if isinstance(value, dict):
        paths: set[str] = set()
        for key, item in value.items():
            paths |= {prefix + key} | field_paths(item, f"{prefix}{key}.")
        return paths
    if isinstance(value, list):
        return set().union(*(field_paths(item, f"{prefix}[].") for item in value))
    return set()


def reply_shape(name: str, content: bytes) -> list[set[str]]:
    if not name.endswith(".sse"):
        return [field_paths(json.loads(content))]
    lines = [line for line in content.decode("utf-8").splitlines() if line.startswith("data: ")]
    payloads = [line.removeprefix("data: ") for line in lines]
    return [{"[DONE]"} if p == "[DONE]" else field_paths(json.loads(p)) for p in payloads]


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_fixture_has_the_fields_the_server_sends_today(
    llama_server_constant: Any, name: str
) -> None:
    # The files under local_servers/fixtures/llamacpp back HTTP-mocked adapter tests. Regenerate
    # them with tests/support/capture_llama_shapes.py when this fails after a llama.cpp upgrade.
    entry = RECORDED[name]
    with httpx.Client(base_url=llama_server_constant.base_url, timeout=30) as c:
        response = c.request(entry["method"], entry["path"], json=entry["body"])

    assert response.status_code == entry["status"]
    recorded = (FIXTURES / name).read_bytes()
    assert reply_shape(name, response.content) == reply_shape(name, recorded)
