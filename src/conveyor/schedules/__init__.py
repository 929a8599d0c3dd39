"""Schedules: cron and interval jobs that fire exactly once per tick across any number of processes.

Declare them in code (`@app.cron(...)`, `@app.every(...)`) or at run time (`ScheduleStore.put`, the
HTTP API, the CLI); run `Scheduler` next to workers or alone (`conveyor scheduler APP`).
"""

from conveyor.schedules.maintenance import Maintenance, MaintenanceReport
from conveyor.schedules.model import (
    MAINTENANCE_ID,
    MissedPolicy,
    Schedule,
    ScheduleKind,
    job_id_tick,
)
from conveyor.schedules.scheduler import Scheduler, SchedulerStats
from conveyor.schedules.store import LastRun, ScheduleInfo, ScheduleStore
from conveyor.schedules.timetable import CronTimetable, IntervalTimetable

__all__ = [
    "MAINTENANCE_ID", "CronTimetable", "IntervalTimetable", "LastRun", "Maintenance", "MaintenanceReport",
    "MissedPolicy", "Schedule", "ScheduleInfo", "ScheduleKind", "ScheduleStore", "Scheduler",
    "SchedulerStats", "job_id_tick",
]
