"""The gateway's pure parts: model names, the `[server]` section, error mapping, `--hash-key`."""

from __future__ import annotations

from pathlib import Path

import pytest

from starcoder_router import Catalog, ConfigError
from starcoder_router._cli import main
from starcoder_router._server.models import ModelChoice, UnknownModelError, resolve_model
from starcoder_router._server.problems import problem_for
from starcoder_router._server.settings import load_server_settings
from starcoder_router._server.tenants import Tenants, hash_key

VARIANTS = set(Catalog.default().variants)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "router.toml"


@pytest.mark.parametrize(("name", "choice"), [
    (None, ModelChoice()),
    ("", ModelChoice()),
    ("starcoder2", ModelChoice()),
    ("starcoder2:latest", ModelChoice()),
    ("starcoder2:cheapest", ModelChoice("cheapest")),
    ("starcoder2:quality", ModelChoice("quality")),
    ("starcoder2:fast", ModelChoice("latency")),
    ("starcoder2:balanced", ModelChoice("balanced")),
    ("starcoder2-7b", ModelChoice(None, "starcoder2-7b")),
    ("starcoder2:7b", ModelChoice(None, "starcoder2-7b")),
    ("starcoder2:15b-instruct", ModelChoice(None, "starcoder2-15b-instruct")),
    ("starcoder2-15b:quality", ModelChoice("quality", "starcoder2-15b")),
])
def test_model_names(name: str | None, choice: ModelChoice) -> None:
    assert resolve_model(name, variants=VARIANTS) == choice


@pytest.mark.parametrize("name", ["gpt-4", "starcoder2:slow", "starcoder2-99b", "starcoder",
                                  "starcoder2-7b:latest:fast", ":fast"])
def test_unknown_model_names(name: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve_model(name, variants=VARIANTS)
    assert problem_for(info.value).status == 404


def test_the_example_config_has_a_valid_server_section() -> None:
    settings = load_server_settings(EXAMPLE)
    assert settings.host == "127.0.0.1"  # the default stays loopback
    assert settings.tenants[0].name == "acme"
    tenants = Tenants(settings.tenants)
    assert tenants.authenticate("Bearer sk-acme-demo") is settings.tenants[0]  # its demo key


def test_bad_server_sections_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text('[[server.tenants]]\nname = "a"\nkey_sha256 = "plaintext-key"\n')
    with pytest.raises(ConfigError, match=r"\[\[server\.tenants\]\] #1 key_sha256"):
        load_server_settings(path)
    path.write_text('[server]\nmax_tokens = 0\n')
    with pytest.raises(ConfigError, match="max_tokens"):
        load_server_settings(path)


def test_keys_are_compared_as_digests() -> None:
    tenants = Tenants(load_server_settings(EXAMPLE).tenants)
    for header in (None, "", "Bearer", "Basic 10", "Bearer 1", "Bearer 100", "10"):
        with pytest.raises(Exception) as info:
            tenants.authenticate(header)
        assert problem_for(info.value).status == 401
    assert Tenants(()).authenticate(None) is None  # no tenants: no key needed


def test_hash_key_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--hash-key", "sk-acme"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-acme")


def test_unexpected_errors_say_nothing_about_themselves() -> None:
    problem = problem_for(RuntimeError("secret detail"))
    assert problem.status == 500
    assert "secret" not in problem.message
