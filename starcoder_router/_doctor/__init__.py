"""Measure what each configured deployment really does: `starcoder-router doctor`.

    starcoder-router doctor --config router.toml --yes --write router.overrides.toml

`probes.py` says what is asked and judges the replies (pure), `runner.py` runs the probes in
order, `session.py` sends their requests through the router's own adapters and transport and
keeps the account, `report.py` formats the findings and turns them
into overrides, `overrides.py` reads, writes and applies the overrides file that router configs
load, and `cli.py` is the command.

Nothing is imported here, so a config that loads an overrides file pulls in only
`overrides.py`.
"""
