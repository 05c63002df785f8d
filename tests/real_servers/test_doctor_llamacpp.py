"""`starcoder-router doctor` against a real llama-server: the window it was started with
(`-c 2048`) is found though the config claims 4,096, written, and used by routing; and on a model
that emits `<file_sep>` at once, the special-token stop is seen to fire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from starcoder_router import NoRouteError, Router, TokenizerCounter
from starcoder_router._cli import main
from starcoder_router._doctor.runner import probe_special_stop
from starcoder_router._doctor.session import Session
from starcoder_router._providers.call import Endpoint
from starcoder_router._providers.llamacpp import LlamaCpp
from starcoder_router._transports.httpx_transport import HttpxTransport
from support import make_tiny_starcoder2
from support.llama_deployments import deployment


def _config(path: Path, server: Any, window: int) -> Path:
    path.write_text(
        f'[[deployments]]\nname = "tiny"\nprovider = "llamacpp"\nvariant = "starcoder2-3b"\n'
        f'model = "{server.model_id}"\ncontext_window = {window}\n'
        f'base_url = "{server.base_url}"\ncapabilities = ["completion", "fim", "streaming"]\n')
    return path


def test_doctor_learns_the_served_window(llama_server: Any, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         exact_counter: TokenizerCounter) -> None:
    config = _config(tmp_path / "router.toml", llama_server, 4096)

    code = main(["doctor", "--config", str(config), "--deployment", "tiny", "--json",
                 "--write", str(tmp_path / "router.overrides.toml")])

    out = capsys.readouterr()
    assert code == 0, out.err
    [report] = json.loads(out.out)["deployments"]
    found = {f["probe"]: f for f in report["findings"]}
    assert found["reach"]["status"] == "ok"
    assert found["model"]["status"] == "ok"
    assert (found["window"]["status"], found["window"]["value"]) == ("differs", llama_server.n_ctx)
    assert found["usage"]["status"] == "ok"
    assert found["stops"]["status"] == "ok"  # no limit up to 32
    assert found["fim"]["value"] == "control"  # the real tokenizer reads the sentinels
    assert found["latency"]["status"] == "ok"
    assert found["special-stop"]["status"] in ("ok", "undecided")  # a random model
    assert report["spent_usd"] == 0

    with Router.from_config(config, env={}, tokenizer=exact_counter) as router:
        assert router.catalog.deployment("tiny").context_window == llama_server.n_ctx
        assert router.route(prompt=" x" * 1000, max_tokens=8).chosen.name == "tiny"
        # 3,000 tokens fit the claim, not the server: no longer sent there.
        with pytest.raises(NoRouteError, match=r"tiny: prompt 3000 tokens .* window 2048"):
            router.route(prompt=" x" * 3000, max_tokens=8)


def test_a_special_token_stop_fires_on_llama_server(
        start_llama_server: Any, tmp_path_factory: pytest.TempPathFactory,
        tokenizer_path: Path) -> None:
    model = tmp_path_factory.mktemp("models") / "tiny-file-sep.gguf"
    make_tiny_starcoder2.write_tiny_model(model, tokenizer_json=tokenizer_path,
                                          mode="constant", constant_token="<file_sep>")
    server = start_llama_server(model)
    dep = deployment(server)
    transport = HttpxTransport()
    try:
        session = Session(dep, LlamaCpp(), Endpoint("llamacpp", server.base_url),
                          transport)
        found = probe_special_stop(session)
    finally:
        transport.close()
    # The server hides the token unless asked to render it; the router asks (preserved_tokens).
    assert (found.status, found.value) == ("ok", "fire"), found.detail
