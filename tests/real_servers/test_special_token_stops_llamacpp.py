"""A real llama-server whose model emits `<file_sep>` at once: a repository-level FIM request
through the router must stop on that control token, on `/v1/completions` and `/infill`, plain and
streamed, with one or two completion tokens paid and no stop text returned.

Without `preserved_tokens` the server renders the token as "" and runs to `max_tokens`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from starcoder_router import TokenizerCounter
from support import make_tiny_starcoder2
from support.llama_deployments import Api, deployment, raw_post, sync_router

REPO_FIM: dict[str, Any] = {
    "prefix": "def add(a, b):\n    ", "suffix": "\n\nprint(add(1, 2))\n",
    "files": [{"path": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
    "path": "main.py", "max_tokens": 32,
}


@pytest.fixture(scope="module")
def file_sep_server(start_llama_server: Any, tmp_path_factory: pytest.TempPathFactory,
                    tokenizer_path: Path) -> Any:
    """The tiny model in constant mode, its one token being `<file_sep>`."""
    out = tmp_path_factory.mktemp("models") / "tiny-starcoder2-file-sep.gguf"
    make_tiny_starcoder2.write_tiny_model(out, tokenizer_json=tokenizer_path, mode="constant",
                            constant_token="<file_sep>")
    return start_llama_server(out)


def test_the_server_alone_does_not_stop_on_the_control_token(file_sep_server: Any) -> None:
    # The premise: a string stop on `<file_sep>` never fires without `preserved_tokens`.
    data = raw_post(file_sep_server, "/completion",
                    {"prompt": "x", "n_predict": 8, "stop": ["<file_sep>"]})
    assert (data["content"], data["stop_type"], data["tokens_predicted"]) == ("", "limit", 8)


@pytest.mark.parametrize("api", [None, "native"])
@pytest.mark.parametrize("stream", [False, True])
def test_repository_fim_stops_at_file_sep(file_sep_server: Any, exact_counter: TokenizerCounter,
                                          api: Api, stream: bool) -> None:
    with sync_router(exact_counter, deployment(file_sep_server, api=api)) as router:
        if stream:
            with router.stream(**REPO_FIM) as s:
                texts = [c.text for c in s]
            completion = s.completion
            assert completion is not None
            assert "".join(texts) == ""
        else:
            completion = router.complete(**REPO_FIM)

    assert completion.finish_reason == "stop"
    assert completion.text == ""
    assert completion.usage.source == "provider"
    assert 1 <= completion.usage.completion_tokens <= 2
