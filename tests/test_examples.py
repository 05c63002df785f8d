"""Every script in examples/ runs, offline, and shows what it says it shows. (The local
llama.cpp example runs against a real llama-server in tests/real_servers/test_example_local.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run examples/`name` as a user would, from an unrelated folder, with its own TMPDIR."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False, env={**os.environ, "TMPDIR": str(tmp), **env},
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp.iterdir()) == [], "the example left temporary files behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"], "it wrote into the cwd"
    return done


def test_the_examples_readme_lists_every_example() -> None:
    listed = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for path in EXAMPLES.iterdir():
        if path.name != "README.md":
            assert f"| `{path.name}` |" in listed, path.name


def test_the_example_tenant_key_is_the_documented_one() -> None:
    from starcoder_router._server.tenants import hash_key

    config = (EXAMPLES / "router.toml").read_text(encoding="utf-8")
    assert f'key_sha256 = "{hash_key("sk-acme-demo")}"' in config
    assert "sk-acme-demo" in (EXAMPLES / "README.md").read_text(encoding="utf-8")


def test_every_example_is_tested() -> None:
    tested = {"quickstart.py", "async_batch.py", "ide_fim.py", "budgets_and_tenants.py",
              "chat_instruct.py", "hooks_logging.py", "local_llamacpp.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_quickstart(tmp_path: Path) -> None:
    out = run_example("quickstart.py", tmp_path).stdout
    assert "== complete ==" in out and "via local/starcoder2-3b" in out
    assert "budget 'global/day' cannot admit" in out


def test_async_batch(tmp_path: Path) -> None:
    out = run_example("async_batch.py", tmp_path).stdout
    assert out.startswith("20 completions,") and "at most 4 at once" in out
    assert "first: Completion(text=" in out


def test_ide_fim_shows_trimming(tmp_path: Path) -> None:
    out = run_example("ide_fim.py", tmp_path).stdout
    assert "completion: 'return sum(values)'" in out
    assert "trimming:   trimmed dropped 2 file(s)" in out
    assert "dropped:    app/helpers.py, app/models.py" in out
    assert "<fim_suffix>" in out


def test_budgets_and_tenants(tmp_path: Path) -> None:
    out = run_example("budgets_and_tenants.py", tmp_path).stdout
    served = {who: re.search(rf"{re.escape(who)}: (\d+) served, then tenant:{key}/day said no",
                             out) for who, key in (("acme", "acme"), ("globex", "globex"),
                                                   ("(no tenant)", r"\*"))}
    counts = {who: int(m.group(1)) for who, m in served.items() if m}
    # Each bucket, the no-tenant one too, admits the same few requests and then says no.
    assert len(counts) == 3 and len(set(counts.values())) == 1, out
    assert 0 < counts["acme"] < 10
    report = out.split("\n\n", 1)[1]
    assert {row.split()[1] for row in report.splitlines()[2:-1]} == {"(none)", "acme", "globex"}


def test_chat_instruct(tmp_path: Path) -> None:
    out = run_example("chat_instruct.py", tmp_path).stdout
    assert "Write a quicksort.\\n\\n### Response" in out
    assert "from vllm/starcoder2-15b-instruct" in out


def test_hooks_logging(tmp_path: Path) -> None:
    done = run_example("hooks_logging.py", tmp_path)
    assert "{'attempt:error': 1, 'attempt:ok': 3, 'routed:fake/starcoder2-3b': 3}" in done.stdout
    assert "INFO starcoder_router: attempt on fake/starcoder2-3b failed: ProviderServerError" in (
        done.stderr)


@pytest.mark.parametrize("name", ["router.toml", "instruct.toml"])
def test_example_configs_load(name: str) -> None:
    from starcoder_router._config import load_config

    assert load_config(EXAMPLES / name).catalog.deployments
