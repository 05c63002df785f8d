"""API keys that cannot leak: hidden in repr and str, and scrubbed from provider messages."""

from __future__ import annotations

__all__ = ["Secret", "redact"]


class Secret:
    """An API key. `repr()` and `str()` never show it; `reveal()` does, for the one header that
    needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("API keys are not picklable")


def redact(text: str, *secrets: Secret | None) -> str:
    """`text` with every occurrence of the secrets (and of any 8+ character tail of one, as some
    providers echo "...abcd1234") replaced by `***`."""
    for s in secrets:
        if not s:
            continue
        value = s.reveal()
        if value in text:
            text = text.replace(value, "***")
        if len(value) >= 16:
            tail = value[-8:]
            if tail in text:
                text = text.replace(tail, "***")
    return text
