"""The public surface: one flat, sorted `__all__`; sync and async twins that match; a light,
offline import."""

from __future__ import annotations

import inspect
import subprocess
import sys

import starcoder_router
from starcoder_router import AsyncRouter, Router


def test_all_is_sorted_and_complete() -> None:
    names = starcoder_router.__all__
    assert names == sorted(names)
    public = {n for n, v in vars(starcoder_router).items()
              if not n.startswith("_") and not inspect.ismodule(v)} - {"annotations"}
    assert public <= set(names)
    for name in names:
        assert getattr(starcoder_router, name) is not None


def test_sync_and_async_routers_have_the_same_methods_and_signatures() -> None:
    def methods(cls: type) -> dict[str, inspect.Signature]:
        return {n: inspect.signature(m) for n, m in inspect.getmembers(cls, inspect.isfunction)
                if not n.startswith("_") or n in ("__init__",)}

    sync, asyn = methods(Router), methods(AsyncRouter)
    assert set(sync) <= set(asyn)
    for name, sig in sync.items():
        other = asyn[name]
        if name == "__init__":
            # Only the transport differs: a sync transport vs an async one or a name.
            sync_params = {k: p.kind for k, p in sig.parameters.items() if k != "transport"}
            async_params = {k: p.kind for k, p in other.parameters.items() if k != "transport"}
            assert sync_params == async_params
            continue
        assert list(sig.parameters) == list(other.parameters), name
        assert [p.kind for p in sig.parameters.values()] == [
            p.kind for p in other.parameters.values()], name
    for name in ("complete",):
        assert inspect.iscoroutinefunction(getattr(AsyncRouter, name))
        assert not inspect.iscoroutinefunction(getattr(Router, name))


def test_import_is_light_and_offline() -> None:
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network touched on import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import sys, starcoder_router\n"
        "heavy = [m for m in ('tokenizers', 'httpx', 'aiohttp', 'redis', 'tenacity', "
        "'jsonschema', 'sqlite3') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_reprs_hide_api_keys() -> None:
    from starcoder_router._providers.call import WireRequest
    from starcoder_router._secrets import Secret

    key = Secret("sk-very-secret-value-123456")
    assert "very-secret" not in repr(key) and "very-secret" not in str(key)
    wire = WireRequest("POST", "https://x/v1/completions",
                       {"authorization": "Bearer sk-very-secret-value-123456"}, b"{}")
    assert "very-secret" not in repr(wire)
    router = Router(env={"FIREWORKS_API_KEY": "sk-very-secret-value-123456"})
    assert "very-secret" not in repr(router)
