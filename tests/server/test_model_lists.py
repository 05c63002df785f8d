"""Every model list the gateway serves (`/v1/models`, `/api/tags`, `/info`, the 404's) shows
exactly the names some configured deployment can serve now, and they all agree."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from starcoder_router import Catalog, CostPolicy, Deployment
from starcoder_router._server.gateway import Gateway
from starcoder_router._server.models import UnknownModelError


def _hosted(variant: str, provider: str = "fireworks") -> Deployment:
    return Deployment(name=f"{provider}/{variant}", provider=provider, variant=variant,
                      model=f"accounts/x/{variant}", context_window=8192,
                      input_usd_per_mtok=0.2, output_usd_per_mtok=0.2,
                      capabilities=frozenset({"completion", "fim", "streaming"}))


def _lists(url: str) -> dict[str, list[str]]:
    models = httpx.get(url + "/v1/models", timeout=10).json()
    tags = httpx.get(url + "/api/tags", timeout=10).json()
    missing = httpx.post(url + "/v1/completions", json={"model": "nope", "prompt": "x"},
                         timeout=10).json()["error"]["message"]
    return {"openai": [m["id"] for m in models["data"]],
            "ollama": [m["name"] for m in tags["models"]],
            "404": missing.split("available: ", 1)[1].split(", ")}


def test_lists_leave_out_deployments_without_a_key(serve: Any, catalog_of: Any) -> None:
    # starcoder2-15b only on a hosted provider whose key is not set: it cannot be served.
    mock = catalog_of("starcoder2-3b")
    catalog = mock.model_copy(update={"deployments": (*mock.deployments,
                                                      _hosted("starcoder2-15b"))})
    gw = serve(catalog=catalog, env={})
    lists = _lists(gw.url)
    expected = ["starcoder2", "starcoder2:cheapest", "starcoder2:quality", "starcoder2:fast",
                "starcoder2:balanced", "starcoder2-3b"]
    assert lists == {"openai": expected, "ollama": expected, "404": expected}
    # a name no list shows is a 404 that says so, not a 503
    r = httpx.post(gw.url + "/v1/completions", json={"model": "starcoder2-15b", "prompt": "x"},
                   timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert "Retry-After" not in r.headers
    # the 404 never names a variant no deployment serves (the packaged instruct variant)
    assert "starcoder2-15b-instruct" not in r.json()["error"]["message"]


def test_retrieve_agrees_with_the_list(serve: Any, catalog_of: Any) -> None:
    import openai

    gw = serve(catalog=catalog_of("starcoder2-3b"))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as client:
        listed = [m.id for m in client.models.list()]
        for name in listed:
            assert client.models.retrieve(name).id == name
        for name in ("starcoder2-7b", "gpt-4"):  # a packaged variant nothing serves here
            with pytest.raises(openai.NotFoundError) as info:
                client.models.retrieve(name)
            assert info.value.code == "model_not_found"


def test_lists_follow_allow_providers(serve: Any, catalog_of: Any) -> None:
    mock = catalog_of("starcoder2-3b")
    catalog = mock.model_copy(update={"deployments": (*mock.deployments,
                                                      _hosted("starcoder2-7b"))})
    gw = serve(catalog=catalog, env={"FIREWORKS_API_KEY": "k"},
               policy=CostPolicy(allow_providers=frozenset({"fireworks"})))
    lists = _lists(gw.url)
    assert lists["openai"] == lists["ollama"] == lists["404"]
    assert lists["openai"][-1:] == ["starcoder2-7b"]
    assert "starcoder2-3b" not in lists["openai"]


def test_nothing_servable_lists_nothing(serve: Any) -> None:
    gw = serve(catalog=Catalog(variants=Catalog.default().variants,
                               deployments=(_hosted("starcoder2-3b"),)), env={})
    assert httpx.get(gw.url + "/v1/models", timeout=10).json()["data"] == []
    assert httpx.get(gw.url + "/api/tags", timeout=10).json()["models"] == []
    r = httpx.post(gw.url + "/v1/completions", json={"model": "starcoder2", "prompt": "x"},
                   timeout=10)
    assert r.status_code == 404


_PROVIDERS = ("openai-compatible", "fireworks", "deepinfra")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    placed=st.lists(st.tuples(st.sampled_from(tuple(Catalog.default().variants)),
                              st.sampled_from(_PROVIDERS)), max_size=6, unique=True),
    keys=st.sets(st.sampled_from(("FIREWORKS_API_KEY", "DEEPINFRA_API_KEY"))),
    allow=st.none() | st.frozensets(st.sampled_from(_PROVIDERS)),
)
def test_names_are_exactly_the_servable_ones(placed: list[tuple[str, str]], keys: set[str],
                                             allow: frozenset[str] | None) -> None:
    deployments = tuple(
        _hosted(v, p) if p != "openai-compatible" else Deployment(
            name=f"local/{v}", provider=p, variant=v, model=v, context_window=4096,
            base_url="http://127.0.0.1:9/v1", capabilities=frozenset({"completion"}))
        for v, p in placed)
    gateway = Gateway(catalog=Catalog(variants=Catalog.default().variants,
                                      deployments=deployments),
                      policy=CostPolicy(allow_providers=allow), env=dict.fromkeys(keys, "k"))
    key_of = {"fireworks": "FIREWORKS_API_KEY", "deepinfra": "DEEPINFRA_API_KEY"}
    servable = {v for v, p in placed
                if (p not in key_of or key_of[p] in keys) and (allow is None or p in allow)}
    names = gateway.model_names
    assert [n for n in names if n.startswith("starcoder2-")] == sorted(servable)
    assert bool(names) == bool(servable)
    for name in names:
        gateway.resolve(name)  # every listed name resolves
    for variant in set(Catalog.default().variants) - servable:
        with pytest.raises(UnknownModelError):
            gateway.resolve(variant)
