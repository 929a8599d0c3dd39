// Normalises queue summaries from the API into one shape the views use.

import { STATES } from "./format.js";

export function queueName(q) {
  return String(q.name ?? q.queue ?? "");
}

export function queueCounts(q) {
  const src = q.counts ?? q.jobs ?? q;
  const out = {};
  for (const st of STATES) out[st] = Number(src?.[st] ?? 0) || 0;
  return out;
}

export function isPaused(q) {
  return Boolean(q.paused ?? q.is_paused);
}

/** Per-minute series and derived figures from the dashboard stats of one queue. */
export function history(stat) {
  const completed = (stat?.completed ?? []).map(Number);
  const failed = (stat?.failed ?? []).map(Number);
  const done = completed.reduce((a, b) => a + b, 0);
  const bad = failed.reduce((a, b) => a + b, 0);
  const rates = completed.map((c, i) => (c + (failed[i] || 0) > 0 ? (failed[i] || 0) / (c + failed[i]) : null));
  return {
    completed, failed, rates, done, bad,
    failureRate: done + bad > 0 ? bad / (done + bad) : null,
    perMinute: completed.length ? (done + bad) / completed.length : 0,
  };
}
