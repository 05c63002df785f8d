"""Chat with StarCoder2-15B-Instruct through a deployment configured in a TOML file.

`instruct.toml` adds a vLLM deployment of the instruct model; here a local server
(`FakeServer`) stands in for vLLM, so the script replaces the file's base URL with the
server's (keyword arguments override the file). The router renders the messages in the
model's own instruction format and sends them to `/v1/completions`.

    python examples/chat_instruct.py
"""

from __future__ import annotations

from pathlib import Path

from starcoder_router import CostPolicy, Router
from starcoder_router.testing import FakeServer

CONFIG = Path(__file__).with_name("instruct.toml")


def main() -> None:
    with FakeServer(text="def quicksort(xs):\n    ...") as server:
        with Router.from_config(CONFIG, providers={"vllm": {"base_url": server.base_url}},
                                policy=CostPolicy(allow_providers={"vllm"}), env={}) as router:
            c = router.complete(messages=[
                {"role": "system", "content": "You write short Python."},
                {"role": "user", "content": "Write a quicksort."},
            ], max_tokens=128)
        print("sent:", repr(server.requests[-1].body["prompt"]))
    print("got: ", repr(c.text), "from", c.deployment.name)


if __name__ == "__main__":
    main()
