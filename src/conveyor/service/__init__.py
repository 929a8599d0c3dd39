"""Worker service room: every queue of an app in one supervised process, with health and metrics."""

from conveyor.service.plan import QueuePlan, plan_queues
from conveyor.service.registry import list_workers
from conveyor.service.supervisor import WorkerService

__all__ = ["QueuePlan", "WorkerService", "list_workers", "plan_queues"]
