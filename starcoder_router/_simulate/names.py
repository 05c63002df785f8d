"""The policies `simulate` can compare (built in `scenarios`). A module of its own, free of
imports, so that `starcoder-router --help` can list them without loading the simulator."""

__all__ = ["SCENARIO_NAMES"]

SCENARIO_NAMES = ("configured", "largest", "7b", "cheapest-summed", "no-trim")
