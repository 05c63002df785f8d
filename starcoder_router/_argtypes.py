"""Argument types for the command line: each refuses, at parsing, a number its option cannot
take (NaN, infinities, negatives, a port past 65535), so that a command stops with a usage line
naming the flag before it prints, opens, truncates or binds anything. Standard library only:
`--help` must stay fast."""

from __future__ import annotations

import argparse
import math

__all__ = ["non_negative_float", "port", "positive_float", "positive_int", "temperature"]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def positive_float(text: str) -> float:
    value = _float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"want a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"want a number of 0 or more, got {text!r}")
    return value


def temperature(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 2:  # the range OpenAI's API takes, and the router's request
        raise argparse.ArgumentTypeError(f"want a number from 0 to 2, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"want a positive whole number, got {text!r}")
    return value


def port(text: str) -> int:
    value = _int(text)
    if value is None or not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"want a port number from 0 to 65535, got {text!r}")
    return value
