"""Numbers that orjson reads as floats although the JSON may have held an integer: orjson reads
integers exactly from -2**63 up to 2**64, and anything beyond as a float. The worker publishes such
events as received, and the tail shows them as received, so that no id is rounded."""

from __future__ import annotations


def may_be_wide_integer(value: object) -> bool:
    """Whether ``value`` is an integral float outside orjson's exact integer range."""
    return type(value) is float and value.is_integer() and not -(2.0**63) < value < 2.0**64
