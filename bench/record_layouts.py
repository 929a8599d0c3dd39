"""Where a job's Redis bytes and Redis work go: candidate record layouts measured in isolation, and the
commands one no-op job costs today (docs/benchmarks.md, "Record layouts and commands per job").

    .venv/bin/python -m bench.record_layouts [--n 20000] [--jobs 20000]

- layouts: on one private redis-server with the default configuration, N records of each candidate
  layout written with the key names Conveyor uses (queue `bench-mem-<8 hex>`, 16-digit ids); INFO
  used_memory growth per record, and MEMORY USAGE of one. Waiting records carry a 200-byte payload;
  retained ones a 2 KB payload and a 4 KB result with the fields a completed record has.
- commands: this checkout bulk-enqueues `--jobs` no-op jobs (`result_ttl=0`) and one fresh worker
  process (concurrency 100) drains them, in each events mode; INFO commandstats (reset before) gives
  the calls and server microseconds per job of every command, scripts' inner commands included.
Raw rows (one JSON line each) and a summary go to bench/results/<UTC time>-record-layouts/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as syncredis

from bench.measure import WorkerProcess, _wait_settled, qname
from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FIRST_ID = 1_764_426_000_000_000  # a generated id: Redis time in microseconds

Writer = Callable[[Any, str, int], Any]


def payload(size: int, letter: str = "x") -> str:
    """A JSON document of exactly `size` bytes, as bench/cost_proc.py builds it."""
    return json.dumps({"p": letter * (size - len('{"p":""}'))}, separators=(",", ":"))


DATA_200, DATA_2K, RESULT_4K = payload(200), payload(2048), payload(4096, "y")
TS = "1764426000000"
DONE_SMALL = {"name": "big", "ts": TS, "state": "completed", "attempts": "1", "token": "1764426000000123",
              "worker": "host:12345:9f3a5c2e", "started": "1764426000100", "finished": "1764426000200",
              "run": "1764426000000123", "sz": "6700"}


def packed(*parts: str) -> str:
    """A length-prefixed string record: `<len>:<part>` repeated (what a Lua reader can split cheaply)."""
    return "".join(f"{len(p)}:{p}" for p in parts)


WAITING: dict[str, Writer] = {
    "hash name,data,ts,state (today: hashtable)": lambda p, q, i: p.hset(
        f"cv:{{{q}}}:job:{i}", mapping={"name": "noop", "data": DATA_200, "ts": TS, "state": "waiting"}),
    "hash of small fields only (listpack, no payload)": lambda p, q, i: p.hset(
        f"cv:{{{q}}}:job:{i}", mapping={"name": "noop", "ts": TS, "state": "waiting"}),
    "hash small fields + payload in its own string key": lambda p, q, i: (
        p.hset(f"cv:{{{q}}}:job:{i}", mapping={"name": "noop", "ts": TS, "state": "waiting"}),
        p.set(f"cv:{{{q}}}:d:{i}", DATA_200)),
    "hash with the payload split in 64-byte fields (listpack)": lambda p, q, i: p.hset(
        f"cv:{{{q}}}:job:{i}", mapping={"name": "noop", "ts": TS, "state": "waiting",
                                        **{f"d{k}": DATA_200[k * 64:(k + 1) * 64] for k in range(4)}}),
    "one packed string per job": lambda p, q, i: p.set(
        f"cv:{{{q}}}:job:{i}", packed("noop", TS, "waiting", DATA_200)),
    "one string `<created>|<name>|<data>` (no length prefixes, no state)": lambda p, q, i: p.set(
        f"cv:{{{q}}}:job:{i}", f"{TS}|noop|{DATA_200}"),
    "one packed string per job, key `j:` instead of `job:`": lambda p, q, i: p.set(
        f"cv:{{{q}}}:j:{i}", packed("noop", TS, "waiting", DATA_200)),
    "payload as a field of one per-queue hash + small job hash": lambda p, q, i: (
        p.hset(f"cv:{{{q}}}:job:{i}", mapping={"name": "noop", "ts": TS, "state": "waiting"}),
        p.hset(f"cv:{{{q}}}:data", str(i), DATA_200)),
    "ready sorted-set entry (today)": lambda p, q, i: p.zadd(f"cv:{{{q}}}:ready", {str(i): float(i - FIRST_ID)}),
    "ready list entry": lambda p, q, i: p.rpush(f"cv:{{{q}}}:readyl", str(i)),
}

def size_class_floor(n: int) -> int:
    """The largest jemalloc size class <= n (4 classes per doubling above 64 bytes)."""
    if n < 128:
        return n - n % 16
    top = 1 << (n.bit_length() - 1)
    step = top // 4
    return top + (n - top) // step * step


SDS_EXTRA = 6  # sdshdr16 header (5) and the terminating zero of a value between 256 B and 64 KB


def split_at_class(p: Any, q: str, i: int) -> None:
    """A small listpack hash, and payload + result in one string cut to fill a size class exactly;
    the tail (under one class step) goes into the hash in <= 64-byte fields, so the hash stays listpack."""
    blob = packed(DATA_2K, RESULT_4K)
    head = size_class_floor(len(blob) + SDS_EXTRA) - SDS_EXTRA
    tail = blob[head:]
    fields = {**DONE_SMALL, **{f"t{k}": tail[k * 64:(k + 1) * 64] for k in range((len(tail) + 63) // 64)}}
    p.hset(f"cv:{{{q}}}:job:{i}", mapping=fields)
    p.set(f"cv:{{{q}}}:d:{i}", blob[:head])


RETAINED: dict[str, Writer] = {
    "small hash + payload and result cut at a size class (tail in the hash)": split_at_class,
    "hash with every field (today: hashtable)": lambda p, q, i: p.hset(
        f"cv:{{{q}}}:job:{i}", mapping={**DONE_SMALL, "data": DATA_2K, "result": RESULT_4K}),
    "small hash + payload string + result string": lambda p, q, i: (
        p.hset(f"cv:{{{q}}}:job:{i}", mapping=DONE_SMALL), p.set(f"cv:{{{q}}}:d:{i}", DATA_2K),
        p.set(f"cv:{{{q}}}:r:{i}", RESULT_4K)),
    "small hash + one packed string (payload, result)": lambda p, q, i: (
        p.hset(f"cv:{{{q}}}:job:{i}", mapping=DONE_SMALL), p.set(f"cv:{{{q}}}:d:{i}", packed(DATA_2K, RESULT_4K))),
    "one packed string per job (every field)": lambda p, q, i: p.set(
        f"cv:{{{q}}}:job:{i}", packed(*DONE_SMALL.values(), DATA_2K, RESULT_4K)),
    "payload string alone (2 KB)": lambda p, q, i: p.set(f"cv:{{{q}}}:d:{i}", DATA_2K),
    "result string alone (4 KB)": lambda p, q, i: p.set(f"cv:{{{q}}}:r:{i}", RESULT_4K),
}


def used_memory(r: syncredis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def measure_layout(r: syncredis.Redis, kind: str, label: str, write: Writer, n: int) -> dict[str, Any]:
    r.flushall()
    queue = f"bench-mem-{uuid.uuid4().hex[:8]}"
    before = used_memory(r)
    pipe = r.pipeline(transaction=False)
    for k in range(n):
        write(pipe, queue, FIRST_ID + k)
        if k % 500 == 499:
            pipe.execute()
    pipe.execute()
    after = used_memory(r)
    keys = [key for key in r.keys(f"cv:{{{queue}}}:*") if isinstance(key, bytes)]
    sample = [key for key in keys if key.endswith(str(FIRST_ID).encode())]
    usage = {key.decode(): r.memory_usage(key, samples=0) for key in sample}
    return {"step": "layout", "kind": kind, "layout": label, "n": n, "bytes_per_record": (after - before) / n,
            "memory_usage_first": usage,
            "encodings": {key.decode(): str(r.object("encoding", key)) for key in sample}}


def command_profile(url: str, r: syncredis.Redis, jobs: int, mode: str) -> dict[str, Any]:
    queue = qname("cmd")
    r.flushall()
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", 1_000_000)
    r.slowlog_reset()
    r.config_resetstat()
    c0 = r.info("cpu")
    enq = subprocess.run([sys.executable, "-m", "bench.cost_proc", "--url", url, "--queue", queue, "--n", str(jobs),
                          "--events", mode], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if enq.returncode != 0:
        raise RuntimeError(enq.stderr[-500:])
    enqueue_stats = r.info("commandstats")
    worker = WorkerProcess(url, queue, jobs, 100)
    try:
        worker.wait_report("done", 900)
        _wait_settled(url, queue, timeout=300)
    finally:
        worker.stop()
    c1 = r.info("cpu")
    stats = r.info("commandstats")
    scripts = script_times(r, jobs)
    r.config_set("slowlog-log-slower-than", 10_000)
    cpu = (float(c1["used_cpu_sys"]) + float(c1["used_cpu_user"]) - float(c0["used_cpu_sys"])
           - float(c0["used_cpu_user"]))

    def per_job(s: dict[str, Any]) -> dict[str, dict[str, float]]:
        return {name.removeprefix("cmdstat_"): {"calls": v["calls"] / jobs, "usec": v["usec"] / jobs}
                for name, v in s.items()}

    return {"step": "commands", "mode": mode, "jobs": jobs, "cpu_us_per_job": cpu / jobs * 1e6,
            "enqueue": per_job(enqueue_stats), "total": per_job(stats), "scripts": scripts}


SCRIPT_BY_KEYS = {"5": "add-5", "10": "finish-10", "1": "extend-1", "8": "recover-stalled-8", "6": "add-keyed-6"}


def script_times(r: syncredis.Redis, jobs: int) -> dict[str, dict[str, float]]:
    """Server microseconds per job of each script (the slow log, every command logged: scripts'
    inner commands are not logged separately), named by their key count."""
    out: dict[str, dict[str, float]] = {}
    for entry in r.slowlog_get(1_000_000):
        args = entry["command"].split(b" ")
        if args[0].lower() not in (b"evalsha", b"eval"):
            continue
        if len(args) < 3:
            continue
        if args[0].lower() == b"eval":  # the first run of a script: its text, whose header names it
            name = args[2].decode().rstrip(":")
        else:
            name = SCRIPT_BY_KEYS.get(args[2].decode(), f"{args[2].decode()} keys")
        row = out.setdefault(name, {"calls": 0.0, "usec": 0.0})
        row["calls"] += 1 / jobs
        row["usec"] += entry["duration"] / jobs
    return out


CALL_PROBES = {
    "HMGET of 4 fields": "redis.call('HMGET', KEYS[1] .. i, 'name', 'data', 'opts', 'attempts')",
    "HSET of 5 fields": "redis.call('HSET', KEYS[1] .. i, 'state', 'active', 'token', '1764426000000123', "
                        "'worker', 'host:1:ab', 'started', '1764426000100', 'attempts', '1')",
    "GET of a string": "redis.call('GET', KEYS[1] .. i)",
    "SET of a 200-byte string": "redis.call('SET', KEYS[1] .. i, ARGV[1])",
    "no call (string building only)": "local x = KEYS[1] .. i",
}


def call_overhead(r: syncredis.Redis, calls: int = 5000, repeats: int = 20) -> dict[str, Any]:
    """What one redis.call costs inside a script, beyond the command's own time: a script making
    `calls` calls, timed by INFO commandstats (the script's time minus its inner commands')."""
    rows: dict[str, Any] = {}
    prefix = f"cv:{{bench-mem-{uuid.uuid4().hex[:8]}}}:job:"
    for label, body in CALL_PROBES.items():
        r.flushall()
        setup = "redis.call('SET', KEYS[1] .. i, ARGV[1])" if "string" in label else \
            "redis.call('HSET', KEYS[1] .. i, 'name', 'noop', 'ts', '1')"
        r.eval(f"for i = 1, {calls} do {setup} end", 1, prefix, DATA_200)
        script = f"for i = 1, {calls} do {body} end"
        sha = r.script_load(script)
        r.config_resetstat()
        for _ in range(repeats):
            r.evalsha(sha, 1, prefix, DATA_200)
        stats = r.info("commandstats")
        total = stats["cmdstat_evalsha"]["usec"]
        inner = sum(v["usec"] for name, v in stats.items() if name not in ("cmdstat_evalsha", "cmdstat_config"))
        n = calls * repeats
        rows[label] = {"script_us_per_call": total / n, "command_us_per_call": inner / n,
                       "overhead_us_per_call": (total - inner) / n}
    return {"step": "call-overhead", "probes": rows}


def summarize(rows: list[dict[str, Any]]) -> str:
    lines = ["# Record layouts (bytes per record, used_memory growth)", ""]
    for kind in ("waiting", "retained"):
        lines += [f"## {kind}", "", "| layout | bytes per record |", "|---|---:|"]
        lines += [f"| {row['layout']} | {row['bytes_per_record']:.0f} |" for row in rows
                  if row["step"] == "layout" and row["kind"] == kind]
        lines.append("")
    for row in rows:
        if row["step"] == "call-overhead":
            lines += ["## one redis.call inside a script", "",
                      "| call | script us per call | command's own us | overhead us |", "|---|---:|---:|---:|"]
            lines += [f"| {k} | {v['script_us_per_call']:.2f} | {v['command_us_per_call']:.2f} | "
                      f"{v['overhead_us_per_call']:.2f} |" for k, v in row["probes"].items()]
            lines.append("")
        if row["step"] != "commands":
            continue
        lines += [f"## commands per no-op job, events `{row['mode']}` (Redis CPU {row['cpu_us_per_job']:.1f} us/job)",
                  "", "| command | calls per job | server us per job |", "|---|---:|---:|"]
        for name, v in sorted(row["total"].items(), key=lambda kv: -kv[1]["usec"]):
            if v["calls"] >= 0.001:
                lines.append(f"| {name} | {v['calls']:.3f} | {v['usec']:.2f} |")
        lines += ["", "| script | calls per job | server us per job |", "|---|---:|---:|"]
        for name, v in sorted(row["scripts"].items(), key=lambda kv: -kv[1]["usec"]):
            lines.append(f"| {name} | {v['calls']:.4f} | {v['usec']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="records per layout")
    ap.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per command profile (0: skip)")
    ap.add_argument("--modes", default="all,followed,none")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or RESULTS / (time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-record-layouts")
    out.mkdir(parents=True, exist_ok=True)
    server = RedisServer().start()
    rows: list[dict[str, Any]] = []
    try:
        r = syncredis.Redis.from_url(server.url)
        version = r.info("server")["redis_version"]
        with (out / "raw.jsonl").open("w") as raw:
            for kind, table in (("waiting", WAITING), ("retained", RETAINED)):
                for label, write in table.items():
                    row = measure_layout(r, kind, label, write, a.n if kind == "waiting" else a.n // 4)
                    row["redis_version"] = version
                    rows.append(row)
                    raw.write(json.dumps(row) + "\n")
                    print(f"{kind:8s} {row['bytes_per_record']:8.0f}  {label}", flush=True)
            row = call_overhead(r)
            rows.append(row)
            raw.write(json.dumps(row) + "\n")
            for mode in [m for m in a.modes.split(",") if m] if a.jobs else []:
                row = command_profile(server.url, r, a.jobs, mode)
                rows.append(row)
                raw.write(json.dumps(row) + "\n")
                print(f"commands {mode}: {row['cpu_us_per_job']:.1f} us/job", flush=True)
        (out / "summary.md").write_text(summarize(rows))
        print(out / "summary.md")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
