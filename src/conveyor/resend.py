"""Cancel and retry that a client may send again after a lost reply.

The scripts report a job that is not in a state the action applies to as WRONG_STATE with the state
it is in (`InvalidStateError.state`). When that state is the one the action leaves a job in (cancel:
`cancelled`; retry: waiting, or waiting for its children, with no attempt made since), the action
asked for is already done, most likely by the same request whose reply was lost: the HTTP API and the
CLI answer as for success, saying it was already so. Any other state stays a conflict.
"""

from __future__ import annotations

from typing import NamedTuple

from conveyor.errors import InvalidStateError
from conveyor.job import JobState
from conveyor.queue import Queue

_RETRIED = frozenset({JobState.WAITING, JobState.WAITING_CHILDREN})


class Outcome(NamedTuple):
    """The job's state after the action, and whether it already was so (nothing was changed)."""

    state: JobState
    already: bool


async def cancel_job(queue: Queue, job_id: str) -> Outcome:
    """Cancel (active: request cancellation); an already cancelled job is an `already` outcome."""
    try:
        return Outcome(await queue.cancel(job_id), False)
    except InvalidStateError as exc:
        if exc.state == JobState.CANCELLED.value:
            return Outcome(JobState.CANCELLED, True)
        raise


async def retry_job(queue: Queue, job_id: str) -> Outcome:
    """Retry a failed or cancelled job; one already waiting with no attempt made (as a retry leaves
    it) is an `already` outcome. Raises InvalidStateError for every other state."""
    try:
        state = await queue.retry(job_id)
    except InvalidStateError as exc:
        if exc.state not in _RETRIED:
            raise
        record = await queue.get_job(job_id)
        if record is None or record.state.value != exc.state or record.attempts_made != 0:
            raise
        return Outcome(record.state, True)
    return Outcome(state, False)
