"""Config mistakes are `ConfigError`s that name the file; relative paths mean the same wherever
the program runs (they are read from the config file's folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from starcoder_router import (
    AsyncRouter,
    ConfigError,
    CostPolicy,
    NoRouteError,
    Router,
    SQLiteStore,
)
from starcoder_router._config import load_config


def _write(folder: Path, text: str, name: str = "router.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory") as info:
        Router.from_config(tmp_path, env={})
    assert str(tmp_path) in str(info.value)


def test_an_unreadable_file_is_a_config_error_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 0 does not stop root (CI runs as root), so open() is made to refuse as it would.
    path = _write(tmp_path, "[policy]\n")
    real_open = open

    def refusing_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(ConfigError, match="Permission denied") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_bytes(b"\xff\xfe[policy]\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_a_misspelled_deployment_name_says_so(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[deployments]]\nname = 'fireworks/starcoder-7b'\n"
                            "context_window = 16384\n")
    with pytest.raises(ConfigError) as info:
        Router.from_config(path, env={})
    msg = str(info.value)
    assert str(path) in msg and "[[deployments]] #1 name" in msg
    assert "no deployment named 'fireworks/starcoder-7b'" in msg
    assert "fireworks/starcoder2-7b" in msg  # the known names are listed
    assert "provider/variant/model" in msg
    assert "Field required" not in msg


def test_a_named_new_deployment_with_every_field_is_added(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[deployments]]\nname = 'box/3b'\nprovider = 'ollama'\n"
                            "variant = 'starcoder2-3b'\nmodel = 'starcoder2:3b'\n"
                            "context_window = 4096\n")
    cfg = load_config(path)
    assert cfg.catalog.deployment("box/3b").model == "starcoder2:3b"


@pytest.mark.parametrize(("text", "field"), [
    ("[[deployments]]\nprovider = 'openrouter'\nvariant = 'starcoder2-3b'\nmodel = 'x'\n"
     "context_window = 4096\n", "[[deployments]] #1 provider"),
    ("[providers.openrouter]\nbase_url = 'http://x'\n", "providers.openrouter"),
])
def test_an_unknown_provider_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="unknown provider 'openrouter'") as info:
        Router.from_config(path, env={})
    assert str(path) in str(info.value) and field in str(info.value)


def test_a_bad_tokenizer_path_names_file_and_resolved_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "conf", "tokenizer = 'models/tok.json'\n")
    with pytest.raises(ConfigError) as info:
        Router.from_config(path, env={})
    msg = str(info.value)
    assert str(path) in msg and "tokenizer" in msg
    assert str(tmp_path / "conf" / "models" / "tok.json") in msg


def test_a_tokenizer_file_that_cannot_be_loaded_names_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "tok.json").write_text("not a tokenizer")
    path = _write(tmp_path, "tokenizer = 'tok.json'\n")
    with pytest.raises(ConfigError, match="cannot load tokenizer") as info:
        Router.from_config(path, env={})
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("text", "problem"), [
    ("[store]\nkind = 'sqlite'\n", "a sqlite store needs a path"),
    ("[store]\nkind = 'redis'\n", "a redis store needs a url"),
    ("[store]\nkind = 'sqlite'\npath = 'no/such/folder/spend.db'\n", "cannot open"),
])
def test_store_mistakes_name_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=problem) as info:
        Router.from_config(path, env={})
    assert str(path) in str(info.value) and "store" in str(info.value)


def test_relative_paths_resolve_against_the_config_folder(
        tmp_path: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    (conf / "tok").mkdir(parents=True)
    shutil.copy(tokenizer_path, conf / "tok" / "tokenizer.json")
    _write(conf, "tokenizer = 'tok/tokenizer.json'\n\n[store]\nkind = 'sqlite'\n"
                 "path = 'data/../spend.db'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "conf" / "router.toml")
    assert cfg.tokenizer == str(conf / "tok" / "tokenizer.json")
    assert cfg.store is not None and cfg.store.path == str(conf / "spend.db")
    with Router.from_config(Path("..") / "conf" / "router.toml", env={}) as router:
        assert router.token_counter.exact
        assert isinstance(router.store, SQLiteStore)
        router.store.close()
    assert (conf / "spend.db").exists()
    assert list(elsewhere.iterdir()) == []


def test_absolute_and_home_paths_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _write(tmp_path / "conf", "[store]\nkind = 'sqlite'\npath = '~/spend.db'\n")
    assert load_config(path).store.path == str(tmp_path / "home" / "spend.db")  # type: ignore[union-attr]
    path = _write(tmp_path / "conf", f"[store]\nkind = 'sqlite'\npath = '{tmp_path / 'a.db'}'\n")
    assert load_config(path).store.path == str(tmp_path / "a.db")  # type: ignore[union-attr]


def test_a_hub_id_tokenizer_is_kept_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path, "tokenizer = 'bigcode/starcoder2-15b'\n")
    assert load_config(path).tokenizer == "bigcode/starcoder2-15b"


def test_an_unknown_benchmark_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError) as info:
        Router(policy=CostPolicy(min_quality=("humanevl", 30)), env={})
    msg = str(info.value)
    assert "unknown benchmark 'humanevl'" in msg and "CostPolicy(min_quality=...)" in msg
    assert "humaneval" in msg and "ds-1000" in msg
    with pytest.raises(ConfigError, match="unknown benchmark 'mbpp-typo'"):
        AsyncRouter(policy=CostPolicy(objective="quality", quality_benchmark="mbpp-typo"),
                    env={})


def test_an_unknown_benchmark_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[policy]\nmin_quality = { benchmark = 'humanevl', score = 30 }\n")
    with pytest.raises(ConfigError, match="unknown benchmark 'humanevl'") as info:
        load_config(path)
    assert str(path) in str(info.value) and "[policy] min_quality" in str(info.value)


def test_known_benchmarks_in_any_spelling_are_accepted() -> None:
    Router(policy=CostPolicy(min_quality=("HumanEval+", 30)), env={}).close()
    Router(policy=CostPolicy(min_quality=("DS1000", 30)), env={}).close()


def test_a_config_path_under_home_is_expanded(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path, "[policy]\nobjective = 'quality'\n")
    assert load_config("~/router.toml").policy.objective == "quality"


def test_a_store_opened_for_a_router_that_fails_is_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    original = SQLiteStore.close

    def recording_close(self: SQLiteStore) -> None:
        closed.append(self.path)
        original(self)

    monkeypatch.setattr(SQLiteStore, "close", recording_close)
    path = _write(tmp_path, "[store]\nkind = 'sqlite'\npath = 'spend.db'\n")
    with pytest.raises(ConfigError, match="unknown benchmark"):
        Router.from_config(path, env={}, policy=CostPolicy(min_quality=("humanevl", 1)))
    assert closed == [str(tmp_path / "spend.db")]


def test_api_key_env_names_the_configured_variable(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text("[providers.fireworks]\napi_key_env = 'MY_FIREWORKS_KEY'\n", encoding="utf-8")
    router = Router.from_config(path, env={"FIREWORKS_API_KEY": "default-var-is-not-read"})
    with router, pytest.raises(NoRouteError) as info:
        router.route(prompt="x", max_tokens=8)
    reasons = " ".join(r for c in info.value.decision.candidates
                       if c.deployment.provider == "fireworks" for r in c.reasons)
    assert "not configured: set MY_FIREWORKS_KEY" in reasons
    assert "FIREWORKS_API_KEY" not in reasons
