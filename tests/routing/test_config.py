"""Config files: they extend and override the defaults, and every mistake names file and field."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from starcoder_router import AsyncRouter, ConfigError, Router
from starcoder_router._config import load_config

GOOD = """
tokenizer = "{tokenizer}"

[policy]
objective = "quality"
max_cost_per_request_usd = 0.01
min_quality = {{ benchmark = "HumanEval", score = 30 }}
prefer_local = true
on_budget_exhausted = "downgrade"
soft_limit = 0.8

[[policy.budgets]]
limit_usd = 5
period = "day"

[[policy.budgets]]
limit_usd = 1
period = "month"
scope = "tenant"

[providers.ollama]
base_url = "http://gpu-box:11434"
timeout = 30

[providers.fireworks]
api_key_env = "MY_FW_KEY"

[[deployments]]
provider = "ollama"
variant = "starcoder2-3b"
model = "starcoder2:3b"
context_window = 16384
usd_per_hour = 1.2

[[deployments]]
name = "fireworks/starcoder2-7b"
context_window = 16384
ttft_s = 0.08

[store]
kind = "sqlite"
path = "{db}"

[retry]
max_retries = 4

[health]
cooldown_s = 3
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_config_loads(tmp_path: Path, tokenizer_path: Path) -> None:
    path = _write(tmp_path, GOOD.format(tokenizer=tokenizer_path, db=tmp_path / "spend.db"))
    cfg = load_config(path)
    assert cfg.policy.objective == "quality"
    assert cfg.policy.min_quality is not None and cfg.policy.min_quality.benchmark == "humaneval"
    assert [b.name for b in cfg.policy.budgets] == ["global/day", "tenant:*/month"]
    assert cfg.providers["ollama"].base_url == "http://gpu-box:11434"
    local = cfg.catalog.deployment("ollama/starcoder2-3b")
    assert local.pricing == "local" and local.usd_per_hour == 1.2
    # An entry with an existing name overrides just the fields it gives.
    fw7 = cfg.catalog.deployment("fireworks/starcoder2-7b")
    assert fw7.context_window == 16384 and fw7.input_usd_per_mtok == 0.20
    assert fw7.ttft_s == 0.08
    assert cfg.store is not None and cfg.store.kind == "sqlite"
    assert cfg.retry is not None and cfg.retry.max_retries == 4

    router = Router.from_config(path, env={"MY_FW_KEY": "k"})
    assert router.token_counter.exact
    decision = router.route(prompt="def f():")
    assert decision.chosen.name == "ollama/starcoder2-3b"  # prefer_local
    assert decision.candidate("fireworks/starcoder2-7b").eligible  # key from MY_FW_KEY
    assert not decision.candidate("deepinfra/starcoder2-15b").eligible
    assert type(router.store).__name__ == "SQLiteStore"
    router.store.close()
    router.close()
    other = AsyncRouter.from_config(path, env={})
    assert other.policy == router.policy
    asyncio.run(other.aclose())  # it opened the SQLite file the config names


@pytest.mark.parametrize(("text", "shown", "problem"), [
    ("[policy]\nobjective = 'fastest'\n", "[policy] objective", "cheapest"),
    ("[policy]\nmax_cost_per_request_usd = -1\n", "[policy] max_cost_per_request_usd",
     "greater than 0"),
    ("[[policy.budgets]]\nlimit_usd = 1\nperiod = 'fortnight'\n", "[[policy.budgets]] #1 period",
     "hour"),
    ("[[policy.budgets]]\nlimit_usd = 1\nscope = 'tag'\n", "[[policy.budgets]] #1", "needs a tag"),
    ("[[policy.budgets]]\nlimit_usd = 1\ntimezone = 'Mars/Olympus'\n",
     "[[policy.budgets]] #1 timezone", "unknown time zone"),
    ("[[deployments]]\nprovider = 'ollama'\nvariant = 'starcoder2-3b'\nmodel = 'x'\n",
     "[[deployments]] #1 context_window", "missing (required)"),
    ("[[deployments]]\nprovider = 'ollama'\nvariant = 'starcoder3'\nmodel = 'x'\n"
     "context_window = 4096\n", "[[deployments]] #1", "unknown variant 'starcoder3'"),
    ("[[deployments]]\nname = 'fireworks/starcoder2-3b'\ncontext_window = 'big'\n",
     "[[deployments]] #1 context_window", "valid integer"),
    ("[[deployments]]\nname = 'fireworks/starcoder2-3b'\nttft_s = -0.1\n",
     "[[deployments]] #1 ttft_s", "greater than or equal to 0"),
    ("[[deployments]]\nname = 'fireworks/starcoder2-3b'\ncapabilities = ['telepathy']\n",
     "[[deployments]] #1 capabilities[0]", "completion"),
    ("[providers.fireworks]\ntimeout = 0\n", "[providers.fireworks] timeout", "greater than 0"),
    ("[providers.fireworks]\nbase_ur = 'x'\n", "[providers.fireworks] base_ur", "unknown key"),
    ("[store]\nkind = 'postgres'\n", "[store] kind", "memory"),
    ("[sttore]\nkind = 'memory'\n", "sttore", "unknown section"),
    ("deployments = 3\n", "[deployments]", "array of tables"),
])
def test_bad_configs_name_file_field_and_problem(tmp_path: Path, text: str, shown: str,
                                                 problem: str) -> None:
    """Each error names the table and key as the file writes them, not a dotted path."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Router.from_config(path, env={})
    msg = str(info.value)
    assert msg.startswith(f"{path}: {shown}")
    assert problem in msg
    assert "field '" not in msg and "instance of" not in msg


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, "[policy]\nobjective = 'fastest'\nmax_cost_per_request_usd = -1\n"
                            "min_quality = 35\n")
    with pytest.raises(ConfigError) as info:
        Router.from_config(path, env={})
    msg = str(info.value)
    assert msg.startswith(f"{path}: 3 problems:\n")
    for line in ("  [policy] objective: ", "  [policy] max_cost_per_request_usd: ",
                 "  [policy] min_quality: Input should be a table"):
        assert line in msg
    assert "more problem" not in msg
    assert info.value.field == "policy.objective"


def test_a_store_without_a_path_names_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[store]\nkind = 'sqlite'\n")
    with pytest.raises(ConfigError, match=r"^.*: \[store\]: a sqlite store needs a path$"):
        Router.from_config(path, env={})


@pytest.mark.parametrize(("providers", "shown"), [
    ({"fireworks": {"timeout": -1}}, "providers['fireworks']['timeout']: Input should be greater"),
    ({"ollama": {"base_ur": "x"}}, "providers['ollama']['base_ur']: Extra inputs"),
])
def test_provider_settings_in_code_name_the_argument(providers: dict[str, Any],
                                                     shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        Router(providers=providers, env={})
    assert str(info.value).startswith(shown) and "ProviderSettings" not in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[policy\nobjective = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_unknown_provider_in_a_deployment(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[deployments]]\nprovider = 'openrouter'\nvariant = 'starcoder2-3b'"
                            "\nmodel = 'x'\ncontext_window = 4096\n")
    with pytest.raises(ConfigError, match="unknown provider 'openrouter'"):
        Router.from_config(path, env={})


def test_base_url_from_the_environment() -> None:
    router = Router(env={"STARCODER_ROUTER_FIREWORKS_BASE_URL": "http://proxy:9000/v1",
                         "FIREWORKS_API_KEY": "k"})
    endpoint = router._core.endpoint("fireworks", None)
    assert endpoint.base_url == "http://proxy:9000/v1"
    assert "k" not in repr(endpoint.api_key)


def test_the_example_config_loads(tmp_path: Path) -> None:
    # A copy: its relative SQLite path is read from the file's folder.
    example = tmp_path / "router.toml"
    example.write_text((Path(__file__).resolve().parents[2] / "examples" / "router.toml")
                       .read_text())
    router = Router.from_config(example, env={})
    assert router.policy.on_budget_exhausted == "downgrade"
    assert router.route(prompt="def f():").chosen.name == "ollama/starcoder2-3b"
    router.store.close()
    router.close()


@pytest.mark.parametrize("router_class", [Router, AsyncRouter])
async def test_a_store_opened_from_the_config_is_closed_with_the_router(
        tmp_path: Path, router_class: type[Router] | type[AsyncRouter]) -> None:
    """Otherwise its SQLite connection stays open (Python 3.13 warns of it when collected)."""
    import sqlite3

    path = _write(tmp_path, "[store]\nkind = 'sqlite'\npath = 'spend.db'\n")
    router = router_class.from_config(path, env={})
    db = router.store._db  # type: ignore[union-attr]
    if isinstance(router, AsyncRouter):
        await router.aclose()
    else:
        router.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.execute("SELECT 1")
