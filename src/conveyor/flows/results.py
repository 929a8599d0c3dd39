"""Children's results as a parent sees them (read from the parent's own record)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conveyor import codec


@dataclass(frozen=True, slots=True)
class ChildResults:
    """Results and errors of a parent's children, keyed by child reference "<queue>:<id>"; `order`
    lists every child in the order it was given (children still running have neither)."""

    order: tuple[str, ...]
    results: dict[str, Any]
    errors: dict[str, dict[str, Any]]

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> ChildResults:
        results: dict[str, Any] = {}
        errors: dict[str, dict[str, Any]] = {}
        for key, value in h.items():
            if key.startswith("r:"):
                results[key[2:]] = codec.loads(value)
            elif key.startswith("e:"):
                errors[key[2:]] = codec.loads(value)
        return cls(tuple(h.get("kids", "").split()), results, errors)

    @property
    def all_ended(self) -> bool:
        """Whether the job has children and every one has a result or an error. A handler adding
        dynamic children tests this, not `order`: a run killed after the children were adopted and
        before they were written leaves `order` filled and the children missing, and the next run
        must add them again (the same call adds only what is missing) and wait."""
        return bool(self.order) and all(r in self.results or r in self.errors for r in self.order)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, ref: str) -> Any:
        """The result of child `ref` ("<queue>:<id>"); KeyError if it has none (failed or not ended)."""
        return self.results[ref]

    def ordered(self) -> list[Any]:
        """Each child's result in the order given; a failed child's error dict in its place, None for
        a child that has not ended (under on_child_failure="continue")."""
        return [self.results[r] if r in self.results else self.errors.get(r) for r in self.order]

    def only(self) -> Any:
        """The result of a single child (a chain step's previous step)."""
        if len(self.order) != 1:
            raise ValueError(f"expected one child, the job has {len(self.order)}")
        return self.ordered()[0]
