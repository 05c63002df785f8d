"""Local fleets: replica groups chosen by affinity (consistent hashing with bounded loads),
each server's slots, and requests in flight per deployment."""

from .fleet import Fleet
from .gate import Hold, SlotGate
from .groups import replica_groups
from .keys import affinity_key
from .policy import FleetPolicy, FleetStrategy
from .ring import BoundedLoadRing, Placement, load_bound
from .slots import (
    ServerSlots,
    SlotProber,
    parse_llama_props,
    parse_llama_slots,
    parse_vllm_metrics,
    probe_urls,
)

__all__ = [
    "BoundedLoadRing",
    "Fleet",
    "FleetPolicy",
    "FleetStrategy",
    "Hold",
    "Placement",
    "ServerSlots",
    "SlotGate",
    "SlotProber",
    "affinity_key",
    "load_bound",
    "parse_llama_props",
    "parse_llama_slots",
    "parse_vllm_metrics",
    "probe_urls",
    "replica_groups",
]
