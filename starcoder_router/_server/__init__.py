"""The HTTP gateway (`starcoder-router serve`): the OpenAI, Ollama and TGI protocols that editor
plugins already speak, in front of `AsyncRouter`.

    gateway.py   model names → routers, tenants, rate limits (protocol-neutral)
    http.py      bodies, streams, headers and errors shared by every protocol
    openai.py / ollama.py / tgi.py   one module per protocol
    app.py       the aiohttp application; cli.py the `serve` command
"""
