"""Every Python block in README.md runs, as written, so the README cannot rot.

A loopback `FakeServer` stands in for every provider: the blocks reach it through the same
`STARCODER_ROUTER_<PROVIDER>_BASE_URL` variables a user would set, with placeholder keys.
Each block runs in a fresh namespace, in its own empty folder (the SQLite file lands there).
The TOML block is loaded as a config file too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from starcoder_router._config import load_config
from starcoder_router._providers.registry import PROVIDERS
from starcoder_router.testing import FakeServer

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block in `language`."""
    found = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```$", TEXT, re.M | re.S):
        found.append((TEXT.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


PYTHON = blocks("python")


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeServer]:
    with FakeServer() as server:
        for name in PROVIDERS:
            var = f"STARCODER_ROUTER_{name.upper().replace('-', '_')}_BASE_URL"
            monkeypatch.setenv(var, server.base_url)
        monkeypatch.setenv("FIREWORKS_API_KEY", "readme-placeholder")
        monkeypatch.setenv("DEEPINFRA_API_KEY", "readme-placeholder")
        monkeypatch.chdir(tmp_path)
        yield server


def test_the_readme_has_python_blocks() -> None:
    assert len(PYTHON) >= 5


@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[f"line{n}" for n, _ in PYTHON])
def test_python_block_runs(stand_in: FakeServer, line: int, code: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    compiled = compile(code, f"README.md:{line}", "exec")
    exec(compiled, {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if ".complete(" in code or ".stream(" in code:
        assert stand_in.requests, "the block sent nothing"
        assert out, "the block printed nothing"


def test_the_using_it_block_streams_with_repository_context(stand_in: FakeServer) -> None:
    [(line, code)] = [(n, c) for n, c in PYTHON if "util_source" in c]
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    fim = [r for r in stand_in.requests if "<fim_prefix>" in str(r.body.get("prompt"))]
    assert fim and "app/util.py" in fim[-1].body["prompt"]
    assert Path("spend.db").exists()  # in this test's own folder


@pytest.mark.parametrize(("line", "code"), blocks("toml"))
def test_toml_block_is_a_valid_config(tmp_path: Path, line: int, code: str) -> None:
    path = tmp_path / "router.toml"
    # The tokenizer path is the reader's own (a missing path is an error), so a hub id stands in.
    path.write_text(code)  # as written: every path it names must exist, or be commented out
    assert load_config(path).policy is not None


def test_every_provider_is_in_the_providers_table() -> None:
    table = TEXT.split("## Providers and the quirks handled")[1].split("\n\n")[1]
    names = {"fireworks": "Fireworks AI", "deepinfra": "DeepInfra", "ollama": "Ollama",
             "vllm": "vLLM", "llamacpp": "llama.cpp", "tgi": "TGI", "lmstudio": "LM Studio",
             "openai-compatible": "`openai-compatible`"}
    assert set(PROVIDERS) == set(names)
    for shown in names.values():
        assert f"\n| {shown} |" in table, shown


def test_every_name_the_readme_imports_from_is_there() -> None:
    """`starcoder_router.testing.X` and `starcoder_router.X` in the text resolve."""
    import importlib

    for module, name in set(re.findall(r"`(starcoder_router(?:\.testing)?)\.([A-Za-z_]+)`",
                                       TEXT)):
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_the_main_job_writes_no_file_into_the_repository() -> None:
    [command] = [line for line in TEXT.splitlines() if "examples/quickstart.py &&" in line]
    report = command.split("--report ")[1]
    assert report.startswith('"${TMPDIR:-/tmp}/'), report


def test_every_continue_entry_sends_a_key() -> None:
    yaml = TEXT.split("config.yaml`) at it")[1].split("```")[1]
    entries = yaml.split("  - name:")[1:]
    assert len(entries) == 2 and all("apiKey:" in e for e in entries)
