"""Know the bill before paying it: replay a workload through the router's own routing, fitting
and budget logic on a simulated clock, with no network, and compare policies side by side.

    starcoder-router workload from-code ~/src/project --requests 2000 -o workload.jsonl
    starcoder-router simulate workload.jsonl --config router.toml --report report.html

or from Python::

    from starcoder_router import read_workload, simulate

    result = simulate(read_workload("workload.jsonl").requests, config="router.toml")
    for s in result.summaries:
        print(s.name, s.cost_usd, s.refused, s.latency_p99_s)

A workload of any length, read lazily and tallied as it runs (what the command does)::

    result = simulate(stream_workload("workload.jsonl"), keep_outcomes=False)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import DeploymentBehaviour, SimulationSettings
    from .runner import SimulationResult, simulate
    from .summary import PolicySummary
    from .workload import WorkloadFile, WorkloadRequest, read_workload, stream_workload

__all__ = [
    "DeploymentBehaviour",
    "PolicySummary",
    "SimulationResult",
    "SimulationSettings",
    "WorkloadFile",
    "WorkloadRequest",
    "read_workload",
    "simulate",
    "stream_workload",
]

# Loaded on first use, so that registering the commands (`.cli`) costs nothing.
_LAZY = {"DeploymentBehaviour": ".model", "SimulationSettings": ".model",
         "SimulationResult": ".runner", "simulate": ".runner", "PolicySummary": ".summary",
         "WorkloadRequest": ".workload", "read_workload": ".workload",
         "WorkloadFile": ".workload", "stream_workload": ".workload"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
