"""Autoscaling signals: per queue backlog, oldest waiting age and a suggested worker count, served
by the API as JSON and Prometheus gauges (`conveyor.autoscaling.http`)."""

from conveyor.autoscaling.signals import QueueSignal, queue_signal, suggested_workers

__all__ = ["QueueSignal", "queue_signal", "suggested_workers"]
