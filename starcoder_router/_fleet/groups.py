"""Replica groups: deployments that serve the same model on several servers.

By default, deployments of one local server kind (llama.cpp, vLLM, Ollama, TGI, LM Studio) that
serve the same variant, model and window from distinct base URLs form a group, named
`"<provider>/<variant>"`, with no configuration. A deployment's `group` names its group instead:
deployments naming the same group form it whatever their provider (a generic
`openai-compatible` server joins a group only this way).
"""

from __future__ import annotations

from collections.abc import Iterable

from .._routing.catalog import LOCAL_PROVIDERS, Deployment

__all__ = ["replica_groups"]


def replica_groups(deployments: Iterable[Deployment], *,
                   auto: bool = True) -> dict[str, tuple[str, ...]]:
    """Group name -> member deployment names, for groups of two or more; with `auto` False,
    only the groups deployments name."""
    explicit: dict[str, list[str]] = {}
    implicit: dict[tuple[str, str, str, int], list[Deployment]] = {}
    for dep in deployments:
        if dep.group:
            explicit.setdefault(dep.group, []).append(dep.name)
        elif auto and dep.provider in LOCAL_PROVIDERS and dep.base_url:
            key = (dep.provider, dep.variant, dep.model, dep.context_window)
            implicit.setdefault(key, []).append(dep)
    groups = {name: tuple(names) for name, names in explicit.items() if len(names) >= 2}
    names_used: dict[str, int] = {}
    for provider, variant, _, _ in implicit:
        names_used[f"{provider}/{variant}"] = names_used.get(f"{provider}/{variant}", 0) + 1
    for (provider, variant, model, window), deps in implicit.items():
        # Two deployments of one server (say its two APIs) are one replica, not two.
        if len(deps) < 2 or len({d.base_url for d in deps}) != len(deps):
            continue
        name = f"{provider}/{variant}"
        if names_used[name] > 1 or name in groups:
            name = f"{name} ({model}, {window} tokens)"
        groups[name] = tuple(d.name for d in deps)
    return groups
