"""Tenant tiers and incident priorities: the vocabulary shared by the domain modules."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    PLATINUM = "platinum"
    GOLD = "gold"
    SILVER = "silver"
    BRONZE = "bronze"


class Priority(StrEnum):
    """P0 is the most urgent. Compare with `rank`, never with string order."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"

    @property
    def rank(self) -> int:
        """0 for P0, 2 for P2: lower is more urgent."""
        return int(self.value[1])

    def more_urgent_than(self, other: Priority) -> bool:
        return self.rank < other.rank
