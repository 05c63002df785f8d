"""How a router spreads requests over replica groups: the `[fleet]` table of a config file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._validation import FrozenModel

__all__ = ["FleetPolicy", "FleetStrategy"]

FleetStrategy = Literal["affinity", "round_robin", "least_loaded"]


class FleetPolicy(FrozenModel):
    """Replica choice within a group, slot probing and the wait in front of a full server.

    Example::

        FleetPolicy(strategy="affinity", epsilon=0.25)

    * `strategy`: "affinity" (consistent hashing with bounded loads on the session, file or
      prompt head, so a replica's prompt cache is reused; a full replica gives way to the next
      one with a free slot), "least_loaded" (fewest requests in flight per slot), or
      "round_robin" (in turn, blind to load: a baseline).
    * `epsilon`: how far above the group's average load a replica may go before new keys
      overflow to the next replica on the ring: bound = ceil((1 + epsilon) * average). The
      load is a replica's active keys: sessions, files or prompt heads seen in the last
      `session_idle_s` seconds. An active key stays on its replica.
    * `auto_groups`: local servers of one kind serving one variant, model and window from
      several base URLs form a group by themselves; False: only deployments naming a `group`.
    * `default_parallel`: a server's slots when it neither says (probe) nor has `parallel`.
    * `probe`: read llama-server's `/slots` / `/props` and vLLM's `/metrics` in the background,
      at most every `probe_ttl_s`, each read waiting at most `probe_timeout_s`.
    * `fim_wait_s` / `other_wait_s`: how long a fill-in-the-middle request, and any other one,
      waits for a slot on a full server before it is sent anyway (the server then queues it).
      Waiting requests are admitted FIM first.
    """

    strategy: FleetStrategy = "affinity"
    auto_groups: bool = True
    epsilon: float = Field(default=0.25, gt=0, le=10)
    session_idle_s: float = Field(default=60.0, gt=0)
    default_parallel: int = Field(default=1, ge=1, le=4096)
    probe: bool = True
    probe_ttl_s: float = Field(default=5.0, gt=0)
    probe_timeout_s: float = Field(default=0.5, gt=0, le=30)
    fim_wait_s: float = Field(default=0.25, ge=0, le=60)
    other_wait_s: float = Field(default=1.0, ge=0, le=60)
