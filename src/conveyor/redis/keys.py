"""The only place key names are built. Every key of a queue shares the hash tag `{<queue>}`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from conveyor.errors import ConfigurationError

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


def validate_prefix(prefix: str) -> str:
    """A key prefix is 1-32 of `A-Za-z0-9._-`: a brace would move keys out of their hash-tag slot."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ConfigurationError(f"invalid key prefix {prefix!r}")
    return prefix


def validate_queue_name(name: str) -> str:
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise ConfigurationError(
            f"invalid queue name {name!r}: use 1-100 characters from letters, digits, '.', '_', '-'"
        )
    return name


MAX_PARTITIONS = 64


def partition_tag(queue: str, index: int, count: int) -> str:
    """The hash tag of partition `index` of `count`: `<queue>#<index>.<n>` with the smallest `n`
    whose Cluster slot falls in the index-th of `count` equal ranges of the slot space, so the
    partitions of a queue land on different shards of a Cluster whose shards hold equal slot
    ranges. ('#' is not allowed in queue names: no partition tag is another queue's name.)"""
    validate_queue_name(queue)
    if not 1 <= count <= MAX_PARTITIONS or not 0 <= index < count:
        raise ConfigurationError(f"partition {index} of {count}: partitions must be in [1, {MAX_PARTITIONS}]")
    low = index * REDIS_CLUSTER_HASH_SLOTS // count
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    n = 0
    while True:
        tag = f"{queue}#{index}.{n}"
        if low <= key_slot(tag.encode()) < high:
            return tag
        n += 1


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Key names of one queue, e.g. `cv:{emails}:ready`; of one partition of a queue when `tag`
    is a partition tag (`cv:{emails#1.7}:ready`, see `partition_tag`)."""

    queue: str
    prefix: str = "cv"
    tag: str = ""

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        validate_prefix(self.prefix)
        if self.tag and not re.match(re.escape(self.queue) + r"#\d{1,2}\.\d{1,6}$", self.tag):
            raise ConfigurationError(f"invalid partition tag {self.tag!r}")

    @property
    def base(self) -> str:
        """Common prefix of every key of the queue; scripts derive per-job keys from it."""
        return f"{self.prefix}:{{{self.tag or self.queue}}}:"

    def _k(self, suffix: str) -> str:
        return self.base + suffix

    @property
    def meta(self) -> str:
        return self._k("meta")

    @property
    def ready(self) -> str:
        return self._k("ready")

    @property
    def delayed(self) -> str:
        return self._k("delayed")

    @property
    def active(self) -> str:
        return self._k("active")

    @property
    def completed(self) -> str:
        return self._k("completed")

    @property
    def failed(self) -> str:
        return self._k("failed")

    @property
    def cancelled(self) -> str:
        return self._k("cancelled")

    @property
    def events(self) -> str:
        return self._k("events")

    @property
    def follow(self) -> str:
        """Set (with a TTL) while a reader follows the events of a queue in `followed` mode."""
        return self._k("follow")

    @property
    def wake(self) -> str:
        return self._k("wake")

    def hub(self, hub_id: str) -> str:
        """A process's wake hub interrupts its blocking wait with a marker here (worker/wakehub.py);
        in the queue's slot, so one wait covers it and the queue's wake list."""
        return self._k("hub:" + hub_id)

    def job(self, job_id: str) -> str:
        return self._k("job:" + job_id)

    def log(self, job_id: str) -> str:
        return self._k("log:" + job_id)

    def output(self, job_id: str) -> str:
        """A job's streamed output (stream-3.lua), deleted and expired with its record."""
        return self._k("out:" + job_id)

    def idempotency(self, key: str) -> str:
        return self._k("idem:" + key)

    def job_key(self, key: str) -> str:
        """A keyed job's key (`key` option): its last job and latest start (includes/keyed.lua)."""
        return self._k("key:" + key)

    def trip(self, trip_id: str) -> str:
        """Record of one worker trip (finish-10.lua), kept briefly so a resent trip is idempotent."""
        return self._k("trip:" + trip_id)

    # Jobs held for a worker with their handler (finish-10.lua, kind H): one zset per job name and
    # the set of names that have held jobs.
    @property
    def holds(self) -> str:
        return self._k("holds")

    def hold(self, name: str) -> str:
        return self._k("hold:" + name)

    # Limits and groups (docs/limits.md, "Keys"). Group names may contain ':', so each group key
    # kind has its own prefix ("gr:", "gs:") and the group name always comes last.
    @property
    def limits(self) -> str:
        return self._k("limits")

    @property
    def group_rotation(self) -> str:
        return self._k("gq")

    @property
    def groups_parked(self) -> str:
        return self._k("gpark")

    @property
    def groups_capped(self) -> str:
        return self._k("gcap")

    @property
    def groups(self) -> str:
        return self._k("groups")

    def group(self, group: str) -> str:
        return self._k("gs:" + group)

    @property
    def rate_log(self) -> str:
        """Start times of the last limit + burst jobs (sliding-window log, newest first)."""
        return self._k("rlog")

    def group_rate_log(self, group: str) -> str:
        return self._k("grl:" + group)

    @property
    def cap_holders(self) -> str:
        """Hash: worker id -> jobs it holds under the queue's concurrency cap (fair sharing)."""
        return self._k("cwa")

    @property
    def cap_waiting(self) -> str:
        """Zset: workers that asked for more than the cap let them take, by the ms time they asked."""
        return self._k("cwait")

    def group_ready(self, group: str) -> str:
        return self._k("gr:" + group)

    # Flows (docs/flows.md): parents waiting for their children, and the outbox of child outcomes
    # (and cancellations) not yet delivered to their parents.
    @property
    def waiting_children(self) -> str:
        return self._k("waiting-children")

    @property
    def outbox(self) -> str:
        return self._k("outbox")

    @property
    def outbox_rejects(self) -> str:
        """Hash: outbox records the mover could not deliver (not a record, a reference to no queue,
        an outcome that is not JSON), set aside with their field; at most 1,000 kept."""
        return self._k("outbox-bad")

    @property
    def schedule_ticks(self) -> str:
        """hash: schedule id -> last tick (ms) whose jobs were enqueued here, so a tick is enqueued once
        even after its job's record is gone (schedules/lua/add-tick-6.lua)"""
        return self._k("sched-ticks")

    def state_set(self, state: str) -> str:
        """The sorted set holding jobs of a state (`waiting` lives in `ready`)."""
        return self._k("ready" if state == "waiting" else state)


@dataclass(frozen=True, slots=True)
class LimiterKeys:
    """A named limiter shared by queues (docs/limits.md, "Named limiters"): all its keys share the
    hash tag {lim:<name>}, one Cluster slot of its own. `log` (the requests window log) is derived
    from `cfg` inside the scripts."""

    name: str
    prefix: str = "cv"

    def _k(self, suffix: str) -> str:
        return f"{self.prefix}:{{lim:{self.name}}}:{suffix}"

    @property
    def all(self) -> list[str]:
        """KEYS of every limiter script: cfg, st, exp, info, use."""
        return [self._k("cfg"), self._k("st"), self._k("exp"), self._k("info"), self._k("use")]

    @property
    def log(self) -> str:
        return self._k("cfg") + ":log"


def limiter_index_key(prefix: str = "cv") -> str:
    """Set of declared limiter names (listing without SCAN); its own slot."""
    return f"{prefix}:{{limiters}}:names"


def registry_key(prefix: str = "cv") -> str:
    """Set of queue names ever used under a prefix (lets tools list queues without SCAN)."""
    return f"{prefix}:queues"


def partition_layout_key(queue: str, prefix: str = "cv") -> str:
    """Set of the partition counts a partitioned queue has been used with (conveyor.partitions), so
    tools that do not declare the queue still read every partition; all in one slot of their own."""
    validate_queue_name(queue)
    return f"{prefix}:{{partitions}}:{queue}"


@dataclass(frozen=True, slots=True)
class WorkerRegistryKeys:
    """Live worker processes: `index` is a zset of worker ids scored by last heartbeat (ms), and
    `worker(id)` a JSON string with a TTL, so an entry disappears when its process dies."""

    prefix: str = "cv"

    @property
    def index(self) -> str:
        return f"{self.prefix}:{{workers}}:index"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:{{workers}}:w:{worker_id}"


def breaker_key(prefix: str, name: str) -> str:
    """Circuit-breaker state of one AI provider, shared by every worker (conveyor.handlers.ai)."""
    return f"{prefix}:{{breakers}}:{name}"


def ai_dedupe_base(prefix: str, fingerprint: str) -> str:
    """Prefix of one AI request fingerprint's keys (handlers/ai/dedupe.py): lease, done, res:<token>,
    ntf:<token>; all in the fingerprint's own slot."""
    return f"{prefix}:{{aid:{fingerprint}}}:"


def send_rate_key(prefix: str, queue: str) -> str:
    """Fixed-window send counter of a handler queue (the email task's per-queue rate limit)."""
    return f"{prefix}:{{{queue}}}:send-rate"


@dataclass(frozen=True, slots=True)
class AlertKeys:
    """Alert rules and their state (conveyor.alerts); the hash tag `{alerts}` keeps every key in one
    Cluster slot, so each change is one script over known keys."""

    prefix: str = "cv"

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    def _k(self, suffix: str) -> str:
        return f"{self.prefix}:{{alerts}}:{suffix}"

    @property
    def rules(self) -> str:
        """hash: rule id -> rule JSON"""
        return self._k("rules")

    @property
    def sources(self) -> str:
        """hash: rule id -> "code" or "api" (who may replace it)"""
        return self._k("sources")

    @property
    def state(self) -> str:
        """hash: rule id -> state JSON (ok/pending/firing, episode, notices sent, last reading)"""
        return self._k("state")

    @property
    def versions(self) -> str:
        """hash: rule id -> state version, bumped by every transition (compare-and-set)"""
        return self._k("ver")

    @property
    def outbox(self) -> str:
        """hash: notice id -> notice JSON, written with its transition, deleted once its delivery
        jobs are enqueued (a crash in between leaves it for the next pass)"""
        return self._k("outbox")

    @property
    def history(self) -> str:
        """stream: fired, repeat and resolved notices (capped), for the dashboard and the API"""
        return self._k("history")


@dataclass(frozen=True, slots=True)
class CostKeys:
    """The cost ledger (conveyor.costs; docs/llm.md, "Cost per tenant"): every key shares the hash
    tag {costs}, one Cluster slot. The scripts derive the per-tenant keys from `cfg`."""

    prefix: str = "cv"

    def _k(self, suffix: str) -> str:
        return f"{self.prefix}:{{costs}}:{suffix}"

    @property
    def cfg(self) -> str:
        """Currency, retention, prices; KEYS[1] of every ledger script."""
        return self._k("cfg")

    @property
    def tenants(self) -> str:
        return self._k("tenants")

    @property
    def budgets(self) -> str:
        return self._k("bt")

    @property
    def events(self) -> str:
        return self._k("events")

    def day(self, day: int, tenant: str) -> str:
        """A tenant's bucket of one UTC day (days since 1970-01-01)."""
        return self._k(f"d:{day}:{tenant}")

    def runs(self, day: int) -> str:
        """Run ids recorded on a day (a second record is refused)."""
        return self._k(f"u:{day}")
