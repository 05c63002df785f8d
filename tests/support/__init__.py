"""Helpers shared by every test folder, imported as ``support.<module>`` (pyproject.toml puts
tests/ on ``sys.path``).

Each module is named for what it gives the tests; fixtures stay in the folders' conftest.py.

- ``ports``: a free loopback port (nothing listens on it, so connecting is refused).
- ``processes``: stopping the server processes tests start.
- ``router_driver``: `Driver`, which runs one test body through `Router` or `AsyncRouter`.
- ``hosted_replies``: scripted Fireworks and DeepInfra answers for the router tests.
- ``provider_replies``: recorded provider replies and one deployment per provider.
- ``local_replies``: Ollama and llama.cpp replies and deployments for respx tests.
- ``llama_server``: find and run a real ``llama-server``.
- ``llama_deployments``: deployments and raw calls against a running ``llama-server``.
- ``stores``: budget keys, ledger entries and worker functions for the store tests.
- ``budget_workers``: routers that spend a budget from other threads and processes.
- ``simulation``: workloads given as token counts and budget configs for the simulator tests.
- ``chromium``: a real headless Chromium driven over the DevTools protocol.

Two are also scripts: ``make_tiny_starcoder2.py`` writes the tiny GGUF model the real-server
tests run, and ``capture_llama_shapes.py`` re-records the llama.cpp replies the respx tests
replay.
"""
