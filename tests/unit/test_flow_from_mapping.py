"""FlowNode.from_mapping (the HTTP body shape) keeps the flow bounds while it reads a tree."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.errors import InvalidFlowError
from conveyor.flows import FlowNode
from conveyor.flows.model import MAX_DEPTH, MAX_NODES


def _chain(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"queue": "q", "name": "leaf"}
    for _ in range(levels):
        node = {"queue": "q", "name": "step", "children": [node]}
    return node


def test_a_tree_too_deep_is_refused_naming_its_node_not_a_recursion_error() -> None:
    """It recursed with no bound: a chain of a few thousand levels raised RecursionError."""
    assert FlowNode.from_mapping(_chain(MAX_DEPTH)).name == "step"
    with pytest.raises(InvalidFlowError, match="deeper than") as err:
        FlowNode.from_mapping(_chain(5000))
    assert err.value.path == "root" + ".children[0]" * (MAX_DEPTH + 1)


def test_a_tree_of_too_many_jobs_is_refused_however_they_are_spread() -> None:
    """Only each children list was bounded: 200 lists of 100 children passed."""
    wide = {"queue": "q", "name": "p", "children": [
        {"queue": "q", "name": "m", "children": [{"queue": "q", "name": "leaf"}] * 100}] * 200}
    with pytest.raises(InvalidFlowError, match=f"at most {MAX_NODES} jobs"):
        FlowNode.from_mapping(wide)
    ok = {"queue": "q", "name": "p", "children": [{"queue": "q", "name": "leaf"}] * (MAX_NODES - 1)}
    assert len(FlowNode.from_mapping(ok).children) == MAX_NODES - 1
