"""Find a local llama.cpp (or Ollama, vLLM, TGI, LM Studio) server serving StarCoder 2 with
`discover_local()` and send it a fill-in-the-middle request.

Start one first, e.g. `llama-server -m starcoder2-3b-Q4_K_M.gguf --port 8080`. Discovery
probes each local server's usual port, or `STARCODER_ROUTER_<PROVIDER>_BASE_URL` when set
(e.g. `STARCODER_ROUTER_LLAMACPP_BASE_URL=http://127.0.0.1:9931`), and reads the window the
server really serves. Nothing is probed until you call it.

    python examples/local_llamacpp.py
"""

from __future__ import annotations

import sys

from starcoder_router import Catalog, CostPolicy, Router, discover_local


def main() -> int:
    found = discover_local(timeout=1.0)
    if not found:
        print("no local StarCoder 2 server found", file=sys.stderr)
        return 1
    for dep in found:
        print(f"found {dep.name}: {dep.model} at {dep.base_url}, window {dep.context_window}")
    catalog = Catalog.default().with_deployments(*found)
    with Router(catalog=catalog, policy=CostPolicy(prefer_local=True)) as router:
        c = router.complete(prefix="def fib(n):\n    ", suffix="\n\nprint(fib(10))\n",
                            max_tokens=16)
    print(f"{c.deployment.name} wrote {c.usage.completion_tokens} tokens "
          f"({c.finish_reason}), ${c.cost_usd:.6f}: {c.text!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
