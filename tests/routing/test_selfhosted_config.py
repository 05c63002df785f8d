"""Declaring a machine's hourly cost in a config file, and the mistakes that are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from starcoder_router import ConfigError, Router
from starcoder_router._config import load_config

BOX = """
[policy]
objective = "cheapest"
count_local_spend = {count}

[[deployments]]
name = "box/starcoder2-3b"
provider = "llamacpp"
variant = "starcoder2-3b"
model = "starcoder2-3b"
context_window = 16384
base_url = "http://127.0.0.1:8080"
usd_per_hour = {usd}
tokens_per_second = {tps}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_hourly_cost_and_count_local_spend_load_from_a_file(tmp_path: Path) -> None:
    path = _write(tmp_path, BOX.format(count="true", usd="0.9", tps="250"))
    cfg = load_config(path)
    box = cfg.catalog.deployment("box/starcoder2-3b")
    assert box.is_local and box.usd_per_hour == 0.9 and box.tokens_per_second == 250
    assert cfg.policy.count_local_spend is True
    with Router.from_config(path, env={}) as router:
        decision = router.route(prompt="def f():", max_tokens=8)
        price = decision.candidate("box/starcoder2-3b").self_hosted
        assert price is not None and price.usd_per_mtok == pytest.approx(1.0)
        text = decision.explain()
        assert "$0.9/h at 250.0 tokens/s = $1.0000 per million tokens (prior:" in text
        assert "(local spend counted: budgets hold and book that price)" in text


def test_count_local_spend_is_off_by_default(tmp_path: Path) -> None:
    path = _write(tmp_path, BOX.format(count="false", usd="0.9", tps="250")
                  .replace("count_local_spend = false\n", ""))
    assert load_config(path).policy.count_local_spend is False


@pytest.mark.parametrize(("count", "usd", "tps", "field", "problem"), [
    ('"yes"', "0.9", "250", "count_local_spend", "valid boolean"),
    ("1", "0.9", "250", "count_local_spend", "valid boolean"),
    ("true", "-0.5", "250", "usd_per_hour", "greater than or equal to 0"),
    ("true", "inf", "250", "usd_per_hour", "finite number"),
    ("true", "nan", "250", "usd_per_hour", "finite number"),
    ("true", '"a dollar"', "250", "usd_per_hour", "valid number"),
    ("true", "0.9", "0", "tokens_per_second", "greater than 0"),
    ("true", "0.9", "-3", "tokens_per_second", "greater than 0"),
])
def test_bad_values_name_the_file_and_the_field(tmp_path: Path, count: str, usd: str, tps: str,
                                                field: str, problem: str) -> None:
    path = _write(tmp_path, BOX.format(count=count, usd=usd, tps=tps))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and field in message and problem in message
