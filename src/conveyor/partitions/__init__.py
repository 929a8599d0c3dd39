"""Partitioned queues: one queue spread over N partitions, each in its own Cluster hash slot
(docs/scaling.md). A partition is a queue with its own keys; this room routes producers and
readers to partitions and runs one worker per partition over a shared concurrency budget."""

from conveyor.partitions.layout import open_queue, read_layout, read_layouts, unserved_jobs
from conveyor.partitions.queue import PartitionedQueue, route_partition
from conveyor.partitions.reading import part_holding, parts_of, queue_of_stream, stream_name
from conveyor.partitions.worker import PartitionedWorker, QueueWorker, worker_for

__all__ = [
    "PartitionedQueue", "PartitionedWorker", "QueueWorker", "open_queue", "part_holding", "parts_of",
    "queue_of_stream", "read_layout", "read_layouts", "route_partition", "stream_name", "unserved_jobs", "worker_for",
]
