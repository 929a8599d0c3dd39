"""The summary of one interleaved session (bench/results/<run>/summary.md) from its raw runs.

    .venv/bin/python -m bench.interleaved_report bench/results/<run>     # rewrite summary.md

Every ratio is taken within one round (Conveyor and its peer measured minutes apart); the median of
the per-round ratios is reported next to them, never a ratio of figures from different runs.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PYTHON_PEERS = ("dramatiq", "dramatiq-t8", "huey", "huey-w8", "taskiq-stream", "taskiq-list", "bullmq", "saq")


def fmt(v: float | None, nd: int = 0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def med(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def by(runs: list[dict[str, Any]], mode: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["step"], r["round"]): r for r in runs if r["mode"] == mode}


def value(run: dict[str, Any] | None, key: str) -> float | None:
    if run is None or not run.get("ok"):
        return None
    v = run.get(key)
    return float(v) if isinstance(v, int | float) else None


def noop_tables(runs: list[dict[str, Any]]) -> list[str]:
    table = by(runs, "noop")
    if not table:
        return []
    steps = list(dict.fromkeys(r["step"] for r in runs if r["mode"] == "noop"))
    rounds = sorted({r for _, r in table})
    lines = ["## No-op: enqueue N, then drain with one worker at concurrency 100 (jobs/s)", "",
             "Each cell: drain (enqueue) [1-minute load average before the run].", "",
             "| step | " + " | ".join(f"round {r}" for r in rounds) + " | median drain | median enqueue |",
             "|---|" + "---:|" * (len(rounds) + 2)]
    for step in steps:
        cells = []
        for r in rounds:
            run = table.get((step, r))
            if run is None:
                cells.append("-")
            elif not run.get("ok"):
                cells.append("failed")
            else:
                cells.append(f"{fmt(value(run, 'drain_rate'))} ({fmt(value(run, 'enqueue_rate'))}) "
                             f"[{run['load_before'][0]}]")
        drains = med(value(table.get((step, r)), "drain_rate") for r in rounds)
        enqueues = med(value(table.get((step, r)), "enqueue_rate") for r in rounds)
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {fmt(drains)} | {fmt(enqueues)} |")
    lines += ["", "Ratios, each within one round:", "",
              "| round | Conveyor / Node drain | Conveyor / best Python peer drain | Conveyor / Node enqueue |",
              "|---|---:|---:|---:|"]
    per_round: list[tuple[float | None, float | None, float | None]] = []
    for r in rounds:
        conv, node = table.get(("conveyor", r)), table.get(("bullmq-node", r))
        peers = [(value(table.get((p, r)), "drain_rate"), p) for p in PYTHON_PEERS]
        best = max(((v, p) for v, p in peers if v is not None), default=(None, ""))
        cd, nd = value(conv, "drain_rate"), value(node, "drain_rate")
        ce, ne = value(conv, "enqueue_rate"), value(node, "enqueue_rate")
        ratios = (cd / nd if cd and nd else None, cd / best[0] if cd and best[0] else None,
                  ce / ne if ce and ne else None)
        per_round.append(ratios)
        lines.append(f"| {r} | {fmt(ratios[0], 2)}x | {fmt(ratios[1], 1)}x ({best[1] or '-'}) | {fmt(ratios[2], 2)}x |")
    m = [med(x[i] for x in per_round) for i in range(3)]
    lines.append(f"| **median** | **{fmt(m[0], 2)}x** | **{fmt(m[1], 1)}x** | **{fmt(m[2], 2)}x** |")
    return lines


def latency_tables(runs: list[dict[str, Any]]) -> list[str]:
    io, lat = by(runs, "io"), by(runs, "latency")
    if not io and not lat:
        return []
    steps = list(dict.fromkeys(r["step"] for r in runs if r["mode"] in ("io", "latency")))
    rounds = sorted({r for _, r in io} | {r for _, r in lat})
    lines = ["## IO-bound (2,000 x 50 ms, concurrency 100; ideal 2,000/s) and pickup latency "
             "(500 jobs, one per 10 ms)", "",
             "| library | IO jobs/s per round | IO median | p50 ms per round | p99 ms per round | p50 / p99 median |",
             "|---|---|---:|---|---|---:|"]
    meds: dict[str, tuple[float | None, float | None, float | None]] = {}
    for step in steps:
        ios = [value(io.get((step, r)), "io_rate") for r in rounds]
        p50s = [value(lat.get((step, r)), "p50_ms") for r in rounds]
        p99s = [value(lat.get((step, r)), "p99_ms") for r in rounds]
        meds[step] = (med(ios), med(p50s), med(p99s))
        lines.append(f"| {step} | {' / '.join(fmt(v) for v in ios)} | {fmt(meds[step][0])} | "
                     f"{' / '.join(fmt(v, 1) for v in p50s)} | {' / '.join(fmt(v, 1) for v in p99s)} | "
                     f"{fmt(meds[step][1], 1)} / {fmt(meds[step][2], 1)} |")
    if "conveyor" in meds:
        lines += ["", "Conveyor against each peer, per round (IO: Conveyor / peer; p50: Conveyor - peer, ms; "
                  "a positive p50 difference means Conveyor picks jobs up later):", "",
                  "| peer | IO ratio per round | p50 difference per round (ms) |", "|---|---|---|"]
        for step in steps:
            if step == "conveyor":
                continue
            ratios, diffs = [], []
            for r in rounds:
                ci, pi = value(io.get(("conveyor", r)), "io_rate"), value(io.get((step, r)), "io_rate")
                cp, pp = value(lat.get(("conveyor", r)), "p50_ms"), value(lat.get((step, r)), "p50_ms")
                ratios.append(f"{ci / pi:.2f}x" if ci and pi else "-")
                diffs.append(f"{cp - pp:+.1f}" if cp is not None and pp is not None else "-")
            lines.append(f"| {step} | {' / '.join(ratios)} | {' / '.join(diffs)} |")
    return lines


def summary(runs: list[dict[str, Any]], meta: dict[str, Any], command: str) -> str:
    loads = [r["load_before"][0] for r in runs] + [r["load_after"][0] for r in runs]
    failed = [f"{r['step']} {r['mode']} round {r['round']}: {r.get('error', '')[:120]}"
              for r in runs if not r.get("ok")]
    versions = sorted({f"{r.get('lib', r['step'])} {r.get('version', '')}".strip() for r in runs if r.get("ok")})
    head = [f"# Interleaved session {meta.get('started_utc', '')} - {meta.get('finished_utc', '')}", "",
            f"Command: `{command}`  ", f"Conveyor commit: `{meta.get('commit', '?')}`; {meta.get('server', '')}; "
            f"Python {meta.get('python', '')}; {meta.get('nproc', '?')} CPUs; job counts x {meta['args']['scale']}; "
            f"{meta['args']['rounds']} round(s), odd rounds in reverse order.  ",
            f"1-minute load average during the session: {fmt(min(loads, default=None), 1)}-"
            f"{fmt(max(loads, default=None), 1)}.  ",
            "Libraries: " + ", ".join(versions) + ".", "", "Raw runs: `runs.jsonl` (one line per run); harness files "
            "by sha256 in `meta.json`.", ""]
    body = [*noop_tables(runs), "", *latency_tables(runs)]
    tail = ["", "Failed runs: " + ("; ".join(failed) if failed else "none") + "."]
    return "\n".join(head + body + tail) + "\n"


def main() -> None:
    folder = Path(sys.argv[1])
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    meta = json.loads((folder / "meta.json").read_text())
    text = summary(runs, meta, (folder / "command.txt").read_text().strip())
    (folder / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
