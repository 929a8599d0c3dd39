"""Flows: parent/child trees of jobs across queues, chains, fan-out/fan-in and durable steps
(docs/flows.md)."""

from conveyor.flows.model import MAX_DEPTH, MAX_NODES, FlowNode, OnChildFailure
from conveyor.flows.producer import FlowProducer
from conveyor.flows.results import ChildResults

__all__ = ["MAX_DEPTH", "MAX_NODES", "ChildResults", "FlowNode", "FlowProducer", "OnChildFailure"]
