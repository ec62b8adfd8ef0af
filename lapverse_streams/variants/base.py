"""Variant family plug-ins: one entry point per family (group lapverse.variant_families)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

ENTRY_POINT_GROUP = "lapverse.variant_families"


class FamilyInputError(ValueError):
    """A family input the family cannot run; `field` names the offending part, e.g. input.series."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class VariantOutcome:
    """One variant's result: its score in 0..1 (higher wins) and what it produced."""

    score: float
    output: dict[str, Any]


class VariantFamily(Protocol):
    """A set of competing variants that solve the same input."""

    name: str
    variants: tuple[str, ...]

    def validate_input(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Return the normalized input or raise FamilyInputError."""
        ...

    async def run(self, variant: str, input: Mapping[str, Any]) -> VariantOutcome:
        """Run one variant on an input that validate_input has already normalized."""
        ...


def load_families() -> dict[str, VariantFamily]:
    """Instantiate every registered family, keyed by entry point name."""
    families: dict[str, VariantFamily] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        families[entry.name] = entry.load()()
    return families
