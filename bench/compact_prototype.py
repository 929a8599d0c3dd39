"""A prototype of a compact hot path, measured against today's scripts on the same server, driven the
same way (docs/benchmarks.md, "Record layouts and commands per job"). It is a measurement, not the
engine: it answers "would this layout halve Redis CPU per job and bring a waiting job under 500
bytes?" before the reliability core is rebuilt around it.

    .venv/bin/python -m bench.compact_prototype [--n 50000] [--rounds 2]

Both variants enqueue N no-op jobs in batches of 1,000 and then drain them with one synchronous
driver: trips of up to 50 leases, each trip recording the previous trip's outcomes (completed, record
deleted) and leasing the next batch, with a trip record for idempotency as the worker keeps one.
- today: add-5.lua and finish-10.lua (events mode `none`), exactly as the worker calls them.
- prototype: a job is one packed string `<attempts>|<created>|<name>|<data>`; the lease lives only in
  the `active` member `<id>|<token>|<attempt>` (its score the deadline), so claiming writes nothing
  per job (MGET of the records, one ZADD) and finishing checks the fence with one ZMSCORE and
  deletes with one ZREM and one DEL per trip: no Redis call per job on the hot path. Two variants:
  the attempt count written into the record at claim (one SET per lease), and `ready` as a list.
Redis CPU is INFO cpu (used_cpu_sys + used_cpu_user) per job; memory is used_memory growth per
waiting job with a 200-byte payload. Raw rows and a summary go to bench/results/<UTC>-compact-prototype/.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import redis as syncredis

from conveyor.redis.keys import QueueKeys
from conveyor.redis.scripts import core_script
from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH, WANT, LEASE_MS, TRIP_TTL_MS = 1000, 50, 30_000, 60_000

PROTO_ADD = """
local meta, ready, prefix, n = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', meta, 'id')) or 0
local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
if last < floor then last = floor end
redis.call('HSET', meta, 'id', string.format('%d', last + n))
local seq = redis.call('HINCRBY', meta, 'seq', n) - n
local head = '0|' .. string.format('%d', now) .. '|'
local mset, zargs = {}, {}
for i = 1, n do
  local id = string.format('%d', last + i)
  mset[#mset + 1] = prefix .. 'job:' .. id
  mset[#mset + 1] = head .. ARGV[1 + 2 * i] .. '|' .. ARGV[2 + 2 * i]
  zargs[#zargs + 1] = string.format('%d', 1000 * 2199023255552 + seq + i)
  zargs[#zargs + 1] = id
end
redis.call('MSET', unpack(mset))
if LIST then
  local ids = {}
  for i = 2, #zargs, 2 do ids[#ids + 1] = zargs[i] end
  redis.call('RPUSH', ready, unpack(ids))
else
  redis.call('ZADD', ready, unpack(zargs))
end
return n
"""

PROTO_TRIP = """
local meta, ready, active, trip = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, lease_ms, want, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local write = ARGV[6] == '1'
local codes = {}
if n > 0 then
  local members = {}
  for i = 1, n do members[i] = ARGV[6 + i] end
  local scores = redis.call('ZMSCORE', active, unpack(members))
  local gone, dels = {}, {}
  for i = 1, n do
    if scores[i] then
      codes[i] = 0
      gone[#gone + 1] = members[i]
      dels[#dels + 1] = prefix .. 'job:' .. string.match(members[i], '^[^|]+')
    else
      codes[i] = -2
    end
  end
  if #gone > 0 then
    redis.call('ZREM', active, unpack(gone))
    redis.call('DEL', unpack(dels))
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {0, 0}
local keys, ids = {}, {}
if LIST then
  ids = redis.call('LPOP', ready, want) or {}
  for i = 1, #ids do keys[i] = prefix .. 'job:' .. ids[i] end
else
  local popped = redis.call('ZPOPMIN', ready, want)
  for i = 1, #popped, 2 do
    ids[#ids + 1] = popped[i]
    keys[#keys + 1] = prefix .. 'job:' .. popped[i]
  end
end
if #ids > 0 then
  local recs = redis.call('MGET', unpack(keys))
  local last = tonumber(redis.call('HGET', meta, 'token')) or 0
  local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if last < floor then last = floor end
  redis.call('HSET', meta, 'token', string.format('%d', last + #ids))
  local deadline = string.format('%d', now + lease_ms)
  local zargs, leased = {}, {}
  for i = 1, #ids do
    local att, rest = string.match(recs[i], '^(%d+)(|.*)$')
    local name, data = string.match(rest, '^|%d+|([^|]*)|(.*)$')
    att = tonumber(att) + 1
    if write then redis.call('SET', keys[i], att .. rest) end
    local token = string.format('%d', last + i)
    local member = ids[i] .. '|' .. token .. '|' .. att
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = member
    leased[#leased + 1] = member
    out[#out + 1] = ids[i]; out[#out + 1] = token; out[#out + 1] = att
    out[#out + 1] = name; out[#out + 1] = data; out[#out + 1] = ''
  end
  redis.call('ZADD', active, unpack(zargs))
  redis.call('SET', trip, table.concat(codes, ',') .. '|' .. table.concat(leased, ' '), 'PX', ttl)
end
for i = 1, #out do codes[#codes + 1] = out[i] end
return codes
"""


def cpu_s(r: syncredis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class Today:
    """add-5 and finish-10 as the worker sends them (trip ids, acknowledgements, record ttl)."""

    label = "today (add-5 + finish-10, events none)"

    def __init__(self, r: syncredis.Redis, queue: str) -> None:
        self.r, self.k = r, QueueKeys(queue)
        self.add_s, self.finish_s = core_script("add"), core_script("finish")
        r.hset(self.k.meta, "events", "none")
        self.seq = 0
        self.acks: list[str] = []

    def add(self, names_data: list[tuple[str, str]]) -> None:
        args: list[Any] = [self.k.base, 1000, len(names_data)]
        for name, data in names_data:
            args += ["p", name, data]
        k = self.k
        self.add_s.call_sync(self.r, (k.meta, k.ready, k.delayed, k.events, k.wake), args)

    def trip(self, done: list[tuple[str, str]]) -> list[tuple[str, str]]:
        k = self.k
        self.seq += 1
        trip_id = f"bench:{self.seq}"
        outcomes: list[Any] = []
        for job_id, token in done:
            outcomes += [job_id, token, "C", "null", 0, "", ""]
        args = [k.base, "bench-worker", LEASE_MS, WANT, 1000, TRIP_TTL_MS, len(self.acks), 0, len(done),
                *self.acks, *outcomes]
        keys = (k.meta, k.ready, k.delayed, k.active, k.completed, k.failed, k.cancelled, k.events, k.wake,
                k.trip(trip_id))
        reply = self.finish_s.call_sync(self.r, keys, args)
        self.acks = [trip_id]
        leased = reply[len(done) + 2:]
        return [(leased[i].decode(), leased[i + 1].decode()) for i in range(0, len(leased), 6)]


class Prototype:
    """The packed record and lease-in-member hot path above."""

    label = "prototype (packed record, lease in the active member)"
    write = "0"
    ready_list = False

    def __init__(self, r: syncredis.Redis, queue: str) -> None:
        self.r, self.k = r, QueueKeys(queue)
        head = f"local LIST = {'true' if self.ready_list else 'false'}\n"
        self.add_s, self.trip_s = r.register_script(head + PROTO_ADD), r.register_script(head + PROTO_TRIP)
        self.seq = 0

    def add(self, names_data: list[tuple[str, str]]) -> None:
        args: list[Any] = [self.k.base, len(names_data)]
        for name, data in names_data:
            args += [name, data]
        self.add_s(keys=[self.k.meta, self.k.ready], args=args)

    def trip(self, done: list[tuple[str, str]]) -> list[tuple[str, str]]:
        self.seq += 1
        k = self.k
        reply = self.trip_s(keys=[k.meta, k.ready, k.active, k.trip(f"bench:{self.seq}")],
                            args=[k.base, LEASE_MS, WANT, TRIP_TTL_MS, len(done), self.write, *(m for m, _ in done)])
        leased = reply[len(done) + 2:]
        return [(f"{leased[i].decode()}|{leased[i + 1].decode()}|{leased[i + 2]}", "")
                for i in range(0, len(leased), 6)]


class PrototypeWrite(Prototype):
    """The same, and the attempt count written into the record at claim (one SET per leased job)."""

    label = "prototype + one record write per lease"
    write = "1"


class PrototypeList(Prototype):
    """The same with `ready` a list (FIFO of one priority; priorities would need one list each)."""

    label = "prototype, ready as a list"
    ready_list = True


def drive(variant: Today | Prototype, r: syncredis.Redis, n: int, data: str) -> dict[str, Any]:
    c0 = cpu_s(r)
    for start in range(0, n, BATCH):
        variant.add([("noop", data if data else json.dumps({"i": i})) for i in range(start, min(n, start + BATCH))])
    c1 = cpu_s(r)
    done: list[tuple[str, str]] = []
    finished = 0
    while True:
        leased = variant.trip(done)
        finished += len(done)
        if not leased and not done:
            break
        done = leased
    c2 = cpu_s(r)
    assert finished == n, (variant.label, finished, n)
    return {"enqueue_cpu_us_per_job": (c1 - c0) / n * 1e6, "drain_cpu_us_per_job": (c2 - c1) / n * 1e6,
            "total_cpu_us_per_job": (c2 - c0) / n * 1e6}


def waiting_bytes(variant_cls: type[Today] | type[Prototype], r: syncredis.Redis, m: int) -> float:
    r.flushall()
    queue = f"bench-mem-{uuid.uuid4().hex[:8]}"
    variant = variant_cls(r, queue)
    variant.add([("noop", json.dumps({"p": "x" * 192}, separators=(",", ":")))])
    before = int(r.info("memory")["used_memory"])
    data = json.dumps({"p": "x" * 192}, separators=(",", ":"))
    for start in range(0, m, BATCH):
        variant.add([("noop", data)] * min(BATCH, m - start))
    return (int(r.info("memory")["used_memory"]) - before) / m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--m", type=int, default=50_000, help="waiting jobs per memory run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or RESULTS / (time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-compact-prototype")
    out.mkdir(parents=True, exist_ok=True)
    server = RedisServer().start()
    rows: list[dict[str, Any]] = []
    try:
        r = syncredis.Redis.from_url(server.url)
        with (out / "raw.jsonl").open("w") as raw:
            for rnd in range(a.rounds):
                order: list[type[Today] | type[Prototype]] = [Today, Prototype, PrototypeWrite, PrototypeList]
                for cls in order if rnd % 2 == 0 else order[::-1]:
                    r.flushall()
                    row = {"round": rnd, "variant": cls.label,
                           **drive(cls(r, f"bench-cpu-{uuid.uuid4().hex[:8]}"), r, a.n, ""),
                           "bytes_per_waiting_job": waiting_bytes(cls, r, a.m),
                           "load": Path("/proc/loadavg").read_text().split()[:3]}
                    rows.append(row)
                    raw.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
        lines = ["| variant | round | enqueue us/job | drain us/job | total us/job | bytes per waiting job |",
                 "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {x['variant']} | {x['round']} | {x['enqueue_cpu_us_per_job']:.1f} | "
                  f"{x['drain_cpu_us_per_job']:.1f} | {x['total_cpu_us_per_job']:.1f} | "
                  f"{x['bytes_per_waiting_job']:.0f} |" for x in rows]
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        print(out / "summary.md")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
