"""`discover_local`: Ollama and llama.cpp probes on canned answers, a fake provider to show the
driver is generic, and servers that are missing, refuse or have no adapter installed."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import httpx
import pytest
import respx

from starcoder_router import Catalog, ConfigError, Deployment
from starcoder_router._discovery import discover_local
from starcoder_router._providers import registry as _registry
from starcoder_router._providers.base import Provider
from starcoder_router._providers.call import Endpoint, WireRequest, WireResponse
from starcoder_router._routing.catalog import LOCAL_PROVIDERS
from support.local_replies import LLAMA, OLLAMA, fixture, ollama_reply, sync_router
from support.ports import free_port


def tags(*models: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"models": list(models)})


def tag(name: str, family: str = "starcoder2", size: str = "3B") -> dict[str, Any]:
    return {"name": name, "model": name, "size": 1_700_000_000, "digest": "9f3",
            "details": {"format": "gguf", "family": family, "families": [family],
                        "parameter_size": size, "quantization_level": "Q4_0"}}


def show(context: int = 16384, capabilities: tuple[str, ...] = ("completion",)) -> dict[str, Any]:
    return {"template": "{{ .Prompt }}", "details": {"family": "starcoder2"},
            "model_info": {"general.architecture": "starcoder2",
                           "starcoder2.context_length": context,
                           "starcoder2.embedding_length": 3072},
            "capabilities": list(capabilities)}


def shows(answers: dict[str, dict[str, Any] | int]) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        name = json.loads(request.content)["model"]
        got = answers[name]
        if isinstance(got, int):
            return httpx.Response(got, json={"error": "boom"})
        return httpx.Response(200, json=got)
    return answer


def test_ollama_lists_then_shows_each_starcoder2_model(mock: respx.MockRouter) -> None:
    mock.get(f"{OLLAMA}/api/tags").mock(return_value=tags(
        tag("starcoder2:3b"), tag("llama3:8b", family="llama"),
        tag("starcoder2:15b-instruct-q4_K_M", size="16B"), tag("my-coder:latest", size="7B"),
        tag("starcoder2:7b-embed"), tag("starcoder2:3b-broken")))
    show_route = mock.post(f"{OLLAMA}/api/show").mock(side_effect=shows({
        "starcoder2:3b": show(),
        "starcoder2:15b-instruct-q4_K_M": show(),
        "my-coder:latest": show(context=8192),
        "starcoder2:7b-embed": show(capabilities=("embedding",)),
        "starcoder2:3b-broken": 500,
    }))
    found = discover_local(addresses={"ollama": OLLAMA}, env={})
    assert [json.loads(c.request.content) for c in show_route.calls] == [
        {"model": m} for m in ("starcoder2:3b", "starcoder2:15b-instruct-q4_K_M",
                               "my-coder:latest", "starcoder2:7b-embed", "starcoder2:3b-broken")]
    assert [(d.name, d.variant, d.model, d.context_window) for d in found] == [
        ("ollama/starcoder2:3b", "starcoder2-3b", "starcoder2:3b", 16384),
        ("ollama/starcoder2:15b-instruct-q4_K_M", "starcoder2-15b-instruct",
         "starcoder2:15b-instruct-q4_K_M", 16384),
        ("ollama/my-coder:latest", "starcoder2-7b", "my-coder:latest", 8192),
    ]
    base, instruct, _ = found
    assert base.capabilities == {"completion", "fim", "streaming", "structured_output"}
    assert instruct.capabilities == {"completion", "chat", "streaming", "structured_output"}
    assert {d.base_url for d in found} == {OLLAMA}
    assert {d.pricing for d in found} == {"local"}


def test_llamacpp_reads_props_models_and_the_vocabulary(mock: respx.MockRouter) -> None:
    mock.get(f"{LLAMA}/props").mock(return_value=httpx.Response(200, content=fixture("props.json")))
    mock.get(f"{LLAMA}/v1/models").mock(
        return_value=httpx.Response(200, content=fixture("v1_models.json")))
    tok = mock.post(f"{LLAMA}/tokenize").mock(
        return_value=httpx.Response(200, json={"tokens": [5, 6, 1]}))
    [dep] = discover_local(addresses={"llamacpp": LLAMA}, env={})
    assert json.loads(tok.calls.last.request.content) == {
        "content": "<repo_name><file_sep><fim_prefix>", "add_special": False,
        "parse_special": True}
    assert (dep.name, dep.provider, dep.variant, dep.model) == (
        "llamacpp/tiny-starcoder2.gguf", "llamacpp", "starcoder2-3b", "tiny-starcoder2.gguf")
    assert (dep.context_window, dep.base_url, dep.api) == (2048, LLAMA, None)


def models_named(name: str, n_ctx: int = 4096) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [
        {"id": name, "object": "model", "owned_by": "llamacpp",
         "meta": {"n_vocab": 49152, "n_ctx": n_ctx, "n_ctx_train": 16384,
                  "n_params": 7_173_923_840}}]})


@pytest.mark.parametrize(("name", "tokens", "variant"), [
    ("/models/model.gguf", [5, 6, 1], "starcoder2-7b"),  # the vocabulary says StarCoder 2
    ("/models/model.gguf", [27, 3, 4], None),            # another model family
    ("/models/starcoder2-15b-Q4_K_M.gguf", [27], "starcoder2-15b"),  # the name says it
])
def test_llamacpp_names_a_model_only_when_it_is_starcoder2(
        mock: respx.MockRouter, name: str, tokens: list[int], variant: str | None) -> None:
    mock.get(f"{LLAMA}/props").mock(return_value=httpx.Response(
        200, json={"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}))
    mock.get(f"{LLAMA}/v1/models").mock(return_value=models_named(name))
    mock.post(f"{LLAMA}/tokenize").mock(return_value=httpx.Response(200, json={"tokens": tokens}))
    found = discover_local(addresses={"llamacpp": LLAMA}, env={})
    assert [d.variant for d in found] == ([variant] if variant else [])


def test_llamacpp_probes_carry_the_api_key(mock: respx.MockRouter) -> None:
    route = mock.route(host="localhost", port=8080).mock(
        return_value=httpx.Response(401, json={"error": {"code": 401, "type":
                                                         "authentication_error"}}))
    assert discover_local(addresses={"llamacpp": LLAMA}, env={"LLAMA_API_KEY": "k-1"}) == []
    assert {c.request.headers["authorization"] for c in route.calls} == {"Bearer k-1"}


def test_an_unreachable_server_is_skipped_after_one_request(mock: respx.MockRouter) -> None:
    route = mock.route(host="localhost").mock(side_effect=httpx.ConnectError("refused"))
    assert discover_local(addresses={"llamacpp": LLAMA, "ollama": OLLAMA}, env={}) == []
    assert sorted(str(c.request.url) for c in route.calls) == [f"{OLLAMA}/api/tags",
                                                               f"{LLAMA}/props"]


def test_a_refused_port_costs_no_timeout() -> None:
    port = free_port()
    started = time.monotonic()
    assert discover_local(addresses={"ollama": f"http://127.0.0.1:{port}",
                                     "llamacpp": f"http://127.0.0.1:{port}"}, timeout=5) == []
    assert time.monotonic() - started < 1.0


def test_default_addresses_are_each_adapters_own(mock: respx.MockRouter) -> None:
    route = mock.route().mock(side_effect=httpx.ConnectError("refused"))
    assert discover_local(env={}) == []
    probed = {str(c.request.url.copy_with(path="/")).rstrip("/") for c in route.calls}
    expected = set()
    for name in LOCAL_PROVIDERS:
        try:
            cls = _registry.provider_class(name)
        except ImportError:
            continue  # an adapter not written yet is skipped (see the next test)
        url = httpx.URL(cls.default_base_url)
        expected.add(str(url.copy_with(path="/")).rstrip("/"))
    assert probed == expected
    assert {"http://localhost:11434", "http://localhost:8080"} <= probed


def test_a_provider_without_its_module_is_skipped(mock: respx.MockRouter,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry.PROVIDERS, "ghost", "ghost:Ghost")
    mock.get(f"{OLLAMA}/api/tags").mock(return_value=tags(tag("starcoder2:3b")))
    mock.post(f"{OLLAMA}/api/show").mock(return_value=httpx.Response(200, json=show()))
    found = discover_local(addresses={"ghost": "http://localhost:1", "ollama": OLLAMA}, env={})
    assert [d.name for d in found] == ["ollama/starcoder2:3b"]


def test_an_unknown_provider_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        discover_local(addresses={"nope": "http://localhost:1"})


class FakeLocal(Provider):
    """A provider the driver knows nothing about: two rounds of probes, then a deployment."""

    name: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str] = "http://localhost:8000/v1"

    def probe(self, endpoint: Endpoint) -> list[WireRequest]:
        return [self.probe_request(endpoint, "GET", "/models")]

    def probe_more(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[WireRequest]:
        if len(responses) == 1:
            return [self.probe_request(endpoint, "POST", "/window", {"id": "sc2"})]
        return []

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        models, window = (json.loads(r.body) if r else None for r in responses)
        assert models is not None and window is not None
        return [Deployment(provider="vllm", variant="starcoder2-15b", model=models["id"],
                           context_window=window["n"], base_url=endpoint.base_url)]


def test_the_driver_is_generic(mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    real = _registry.provider_class
    monkeypatch.setattr("starcoder_router._discovery.provider_class",
                        lambda name: FakeLocal if name == "vllm" else real(name))
    url = "http://localhost:8000/v1"
    mock.get(f"{url}/models").mock(return_value=httpx.Response(200, json={"id": "sc2"}))
    window = mock.post(f"{url}/window").mock(return_value=httpx.Response(200, json={"n": 8192}))
    [dep] = discover_local(addresses={"vllm": url}, env={})
    assert json.loads(window.calls.last.request.content) == {"id": "sc2"}
    assert (dep.model, dep.context_window, dep.base_url) == ("sc2", 8192, url)


def test_an_adapter_that_cannot_read_its_answers_is_skipped(
        mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    real = _registry.provider_class
    monkeypatch.setattr("starcoder_router._discovery.provider_class",
                        lambda name: FakeLocal if name == "vllm" else real(name))
    mock.get("http://localhost:8000/v1/models").mock(return_value=httpx.Response(200, text="{"))
    mock.post("http://localhost:8000/v1/window").mock(return_value=httpx.Response(200, json={}))
    assert discover_local(addresses={"vllm": "http://localhost:8000/v1"}, env={}) == []


def test_found_deployments_route(mock: respx.MockRouter) -> None:
    host = "http://gpu-box:11434"
    mock.get(f"{host}/api/tags").mock(return_value=tags(tag("starcoder2:3b")))
    mock.post(f"{host}/api/show").mock(return_value=httpx.Response(200, json=show(8192)))
    generate = mock.post(f"{host}/api/generate").mock(return_value=ollama_reply("ok"))
    found = discover_local(addresses={"ollama": host}, env={})
    Catalog.default().with_deployments(*found)  # valid as a catalog
    c = sync_router(*found).complete(prompt="def f():", max_tokens=4)
    assert (c.text, c.deployment.name) == ("ok", "ollama/starcoder2:3b")
    assert json.loads(generate.calls.last.request.content)["options"]["num_ctx"] == 8192


@pytest.mark.parametrize(("provider", "given", "probed"), [
    ("llamacpp", f"{LLAMA}/v1", {f"{LLAMA}/props"}),
    ("llamacpp", f"{LLAMA}/v1/", {f"{LLAMA}/props"}),
    ("ollama", f"{OLLAMA}/v1", {f"{OLLAMA}/api/tags"}),
    ("vllm", "http://localhost:8000", {"http://localhost:8000/v1/models"}),
    ("vllm", "http://localhost:8000/v1", {"http://localhost:8000/v1/models"}),
])
def test_a_base_url_with_or_without_v1_is_probed_where_the_server_answers(
        mock: respx.MockRouter, provider: str, given: str, probed: set[str]) -> None:
    route = mock.route().mock(side_effect=httpx.ConnectError("refused"))
    assert discover_local(addresses={provider: given}, env={}) == []
    urls = {str(c.request.url) for c in route.calls}
    assert urls == probed and not any("/v1/v1" in u for u in urls)


def test_llamacpp_at_a_v1_base_is_found_and_routed_at_its_root(mock: respx.MockRouter) -> None:
    mock.get(f"{LLAMA}/props").mock(return_value=httpx.Response(200, content=fixture("props.json")))
    mock.get(f"{LLAMA}/v1/models").mock(
        return_value=httpx.Response(200, content=fixture("v1_models.json")))
    mock.post(f"{LLAMA}/tokenize").mock(return_value=httpx.Response(200, json={"tokens": [1]}))
    found = discover_local(addresses={"llamacpp": f"{LLAMA}/v1"}, env={})
    assert found and all(d.base_url == LLAMA for d in found)


@pytest.mark.parametrize("provider", ["fireworks", "deepinfra", "openai-compatible"])
def test_a_provider_that_cannot_be_probed_is_a_config_error(provider: str) -> None:
    with pytest.raises(ConfigError, match=f"{provider} cannot be discovered: only local"):
        discover_local(addresses={provider: "http://localhost:1"})


def test_a_server_without_starcoder_says_why_it_was_skipped(
        mock: respx.MockRouter, caplog: pytest.LogCaptureFixture) -> None:
    mock.get(f"{OLLAMA}/api/tags").mock(return_value=tags(tag("llama3:8b", family="llama")))
    mock.route(host="localhost", port=1).mock(side_effect=httpx.ConnectError("refused"))
    with caplog.at_level("INFO", logger="starcoder_router"):
        assert discover_local(env={"STARCODER_ROUTER_OLLAMA_BASE_URL": OLLAMA,
                                   **{f"STARCODER_ROUTER_{p}_BASE_URL": "http://localhost:1"
                                      for p in ("VLLM", "LLAMACPP", "TGI", "LMSTUDIO")}}) == []
    assert (f"ollama at {OLLAMA} answered (200) but serves no StarCoder 2 model; skipped"
            in caplog.text)


def test_a_named_address_that_does_not_answer_is_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level("WARNING", logger="starcoder_router"):
        assert discover_local(addresses={"llamacpp": url}, env={}) == []
    assert f"nothing answers at {url} (llamacpp)" in caplog.text


class EchoingLocal(FakeLocal):
    """Reads its probe's answer as `/tokenize` answers are read: an error status becomes a
    provider error quoting the server's message."""

    key_envs: ClassVar[tuple[str, ...]] = ("VLLM_API_KEY",)

    def discovered(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[Deployment]:
        from starcoder_router._providers.errormap import error_for

        answer = responses[0]
        assert answer is not None
        raise error_for(answer.status, answer.headers, answer.body, provider="vllm")

    def probe_more(self, endpoint: Endpoint,
                   responses: list[WireResponse | None]) -> list[WireRequest]:
        return []


def test_a_probe_answer_that_echoes_the_key_is_scrubbed(
        mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-local-0123456789abcdef"
    monkeypatch.setattr("starcoder_router._discovery.provider_class",
                        lambda name: EchoingLocal)
    mock.get("http://localhost:8000/v1/models").mock(return_value=httpx.Response(
        401, json={"error": {"message": f"invalid key Bearer {key}"}}))
    with caplog.at_level("DEBUG", logger="starcoder_router"):
        assert discover_local(addresses={"vllm": "http://localhost:8000/v1"},
                              env={"VLLM_API_KEY": key}) == []
    assert "could not read what vllm" in caplog.text
    assert key not in caplog.text and key[-8:] not in caplog.text
