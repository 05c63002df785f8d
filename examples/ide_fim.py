"""What an editor plugin sends: fill-in-the-middle at the cursor, with other files of the
repository as context, trimmed to fit the deployment's window.

The deployment here has a deliberately small window (1,024 tokens), so the far context goes
first: other files, then the lines farthest from the cursor. The FIM sentinels always stay.
A local server (`FakeServer`) stands in for the model, so this runs offline.

    python examples/ide_fim.py
"""

from __future__ import annotations

from starcoder_router import Catalog, CostPolicy, Router
from starcoder_router.testing import FakeServer

HELPERS = "\n".join(f"def helper_{i}(x):\n    return x * {i}\n" for i in range(120))
MODELS = "\n".join(f"class Model{i}:\n    field_{i}: int = {i}\n" for i in range(60))
BEFORE = "import helpers\n\n" + "\n".join(f"VALUE_{i} = {i}" for i in range(150)) + (
    "\n\ndef total(values):\n    ")
AFTER = "\n\nprint(total([1, 2, 3]))\n"


def main() -> None:
    with FakeServer(text="return sum(values)") as server:
        small = server.deployment(name="local/starcoder2-3b-1k", context_window=1024)
        router = Router(catalog=Catalog.default().with_deployments(small),
                        policy=CostPolicy(allow_providers={"openai-compatible"}), env={})
        with router:
            c = router.complete(prefix=BEFORE, suffix=AFTER, repo_name="acme/app",
                                path="app/main.py", max_tokens=64,
                                files=[("app/helpers.py", HELPERS), ("app/models.py", MODELS)])
        sent = server.requests[-1].body["prompt"]
    print("completion:", repr(c.text))
    print("trimming:  ", c.trimmed.describe() if c.trimmed else "none needed")
    if c.trimmed:
        print("dropped:   ", ", ".join(c.trimmed.dropped_files) or "no files")
    print("sent", len(sent), "characters; starts", repr(sent[:60]))
    print("cursor at: ", repr(sent[sent.index("<fim_suffix>") - 30:][:60]))


if __name__ == "__main__":
    main()
