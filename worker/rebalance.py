"""The rebalance callbacks the loop gives a source (both clients call them inside a poll)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Partition = tuple[str, int]
#: Called with the partitions a rebalance assigns (the whole new assignment).
PartitionsCallback = Callable[[list[Partition]], None]


class RevokedCallback(Protocol):
    """Called with the partitions a rebalance takes away: ``lost`` when the group already gave
    them to others (the member's session expired) and nothing of them may be committed."""

    def __call__(self, partitions: list[Partition], lost: bool = False) -> None: ...
