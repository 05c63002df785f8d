"""The Ollama protocol, driven by the official `ollama` client against a real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ollama
import pytest

from starcoder_router._server.settings import ServerSettings, TenantSettings
from starcoder_router._server.tenants import hash_key


@pytest.fixture
def make_client() -> Iterator[Any]:
    made: list[ollama.Client] = []

    def make(url: str, **kwargs: Any) -> ollama.Client:
        c = ollama.Client(host=url, timeout=10, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c._client.close()  # the client has no close(); its httpx pool would warn


def test_generate_with_suffix_is_fill_in_the_middle(serve: Any, upstream: Any,
                                                    make_client: Any) -> None:
    gw = serve()
    r = make_client(gw.url).generate(model="starcoder2:3b", prompt="def add(a, b):\n    ",
                                     suffix="\n", stream=False, options={"num_predict": 8})
    assert r.response == "return a + b"
    assert r.done is True
    assert r.done_reason == "stop"
    assert (r.prompt_eval_count, r.eval_count) == (14, 4)  # the rendered prompt, by the upstream
    body = upstream.bodies[-1]
    assert body["prompt"] == "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"
    assert body["max_tokens"] == 8
    assert body["model"] == "mock-starcoder2-3b"


def test_raw_prompt_and_stop_options_pass_through(serve: Any, upstream: Any,
                                                  make_client: Any) -> None:
    gw = serve()
    written = "<fim_prefix>x = <fim_suffix>\n<fim_middle>"
    make_client(gw.url).generate(model="starcoder2", prompt=written, raw=True, stream=False,
                                 options={"num_predict": 5, "stop": ["\n"], "temperature": 0.2})
    body = upstream.bodies[-1]
    assert body["prompt"] == written
    assert body["stop"][0] == "\n"
    assert body["temperature"] == 0.2


def test_generate_streams_ndjson(serve: Any, upstream: Any, make_client: Any) -> None:
    gw = serve()
    parts = list(make_client(gw.url).generate(model="starcoder2", prompt="def add(a, b):",
                                              suffix="", stream=True,
                                              options={"num_predict": 8}))
    assert "".join(p.response for p in parts) == "return a + b"
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].eval_count == 4
    assert upstream.bodies[-1]["stream"] is True


@pytest.mark.parametrize("empty_final", [False, True])
def test_stream_has_no_empty_parts(serve: Any, upstream: Any, make_client: Any,
                                   empty_final: bool) -> None:
    from upstream import Reply

    # Ollama streams one part per piece of text and a last `done` part with an empty response;
    # nothing empty in between, whatever the upstream's last chunk looks like.
    gw = serve()
    upstream.script(Reply(empty_final=empty_final))
    parts = list(make_client(gw.url).generate(model="starcoder2", prompt="def f():",
                                              stream=True, options={"num_predict": 8}))
    assert [p.response for p in parts] == ["return", " a", " +", " b", ""]
    assert [p.done for p in parts] == [False, False, False, False, True]
    assert parts[-1].done_reason == "stop"


def test_list_and_show(serve: Any, make_client: Any) -> None:
    gw = serve()
    c = make_client(gw.url)
    names = [m.model for m in c.list().models]
    assert "starcoder2" in names
    assert "starcoder2-7b" in names
    shown = c.show("starcoder2-7b")
    assert shown.details is not None
    assert shown.details.family == "starcoder2"
    assert shown.details.parameter_size == "7B"
    assert shown.capabilities is not None
    assert "insert" in shown.capabilities  # what editors check before sending a suffix
    with pytest.raises(ollama.ResponseError) as info:
        c.show("llama3")
    assert info.value.status_code == 404


def test_show_template_uses_the_suffix_and_num_ctx_is_the_deployments(
        serve: Any, make_client: Any, catalog_of: Any) -> None:
    catalog = catalog_of()
    # the 7B is served at 8192 tokens although the model itself reads 16384
    deployments = tuple(d.model_copy(update={"context_window": 8192})
                        if d.variant == "starcoder2-7b" else d for d in catalog.deployments)
    gw = serve(catalog=catalog.model_copy(update={"deployments": deployments}))
    c = make_client(gw.url)
    shown = c.show("starcoder2:7b")
    # Continue sends a suffix only when the template contains `.Suffix`; Ollama reports
    # `insert` only for such a template.
    assert shown.template is not None and ".Suffix" in shown.template
    assert "<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>" in shown.template
    assert shown.capabilities is not None and "insert" in shown.capabilities
    assert shown.parameters is not None
    assert shown.parameters.split() == ["num_ctx", "8192"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["starcoder2.context_length"] == 8192
    # a chat-only variant has no FIM deployment: no insert, no suffix in the template
    instruct = c.show("starcoder2-15b-instruct")
    assert instruct.capabilities == ["completion"]
    assert instruct.template is not None and ".Suffix" not in instruct.template
    assert instruct.parameters is not None and instruct.parameters.split()[1] == "2048"


def test_version(serve: Any) -> None:
    import httpx

    gw = serve()
    assert httpx.get(gw.url + "/api/version").json()["version"]


def test_errors_are_ollama_shaped(serve: Any, make_client: Any) -> None:
    tenants = (TenantSettings(name="acme", key_sha256=hash_key("sk-acme")),)
    gw = serve(settings=ServerSettings(tenants=tenants))
    with pytest.raises(ollama.ResponseError) as info:
        make_client(gw.url).generate(model="starcoder2", prompt="x", stream=False)
    assert info.value.status_code == 401
    assert "API key" in info.value.error
    ok = make_client(gw.url, headers={"Authorization": "Bearer sk-acme"})
    with pytest.raises(ollama.ResponseError) as info:
        ok.generate(model="nope", prompt="x", stream=False)
    assert info.value.status_code == 404
    assert ok.generate(model="starcoder2", prompt="x", stream=False,
                       options={"num_predict": 2}).response == "return a"
