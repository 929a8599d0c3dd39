// Overview: every queue with counts per state, paused flag, last hour's throughput and failure rate,
// oldest waiting job's age, and the number of workers online. Refreshed every 2 s.

import * as api from "../api.js";
import { barChart, rateChart } from "../charts.js";
import { h, link, replace } from "../dom.js";
import { STATES, ageText, percentText } from "../format.js";
import { history, isPaused, queueCounts, queueName } from "../queues.js";
import { errorBox } from "../ui.js";

export async function renderOverview(container) {
  const summary = h("div", { class: "summary" });
  const table = h("div", { class: "table-wrap" });
  const status = h("p", { class: "muted updated", "data-testid": "updated" });
  replace(container, h("h2", {}, "Queues"), summary, table, status);

  async function refresh() {
    const [queues, stats, workers] = await Promise.all([
      api.listQueues(),
      api.stats().catch(() => null),
      api.listWorkers().catch(() => null),
    ]);
    queues.sort((a, b) => queueName(a).localeCompare(queueName(b)));
    const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const q of queues) for (const [s, n] of Object.entries(queueCounts(q))) totals[s] += n;
    replace(summary,
      tile("Queues", queues.length, "queues"),
      tile("Workers online", workers === null ? "—" : workers.length, "workers"),
      tile("Waiting", totals.waiting, "waiting"),
      tile("Active", totals.active, "active"),
      tile("Failed", totals.failed, "failed"),
    );
    const rows = queues.map((q) => queueRow(q, stats?.queues?.[queueName(q)]));
    replace(table, h("table", { class: "queues", "data-testid": "queues-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Queue"), h("th", {}, "Status"),
        STATES.map((s) => h("th", { class: "num" }, s)),
        h("th", { class: "num" }, "Oldest waiting"),
        h("th", {}, "Throughput (1 h)"), h("th", {}, "Failure rate (1 h)"),
      )),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No queues yet."))),
    ));
    replace(status, `Updated ${new Date().toLocaleTimeString()} · live`);
  }

  await refresh().catch((err) => replace(table, errorBox(err)));
  return { refresh, follows: [] };
}

function lastMinute(q) {
  const t = q.throughput;
  return t && typeof t === "object" ? Number(t.completed ?? 0) + Number(t.failed ?? 0) : "—";
}

function tile(label, value, id) {
  return h("div", { class: "tile", "data-testid": `tile-${id}` }, h("div", { class: "tile-value" }, String(value)), h("div", { class: "tile-label" }, label));
}

function queueRow(q, stat) {
  const name = queueName(q);
  const counts = queueCounts(q);
  const hist = history(stat);
  const oldest = stat?.oldest_waiting_ms ?? q.oldest_waiting_age_ms ?? null;
  return h("tr", { "data-queue": name },
    h("td", {}, link(name, "queues", name),
      q.declared === false ? [" ", h("span", { class: "badge", title: "in Redis, not declared by the app this API serves", "data-testid": "undeclared" }, "not declared")] : null),
    h("td", {},
      isPaused(q) ? h("span", { class: "badge paused", "data-testid": "paused" }, "paused") : h("span", { class: "badge running" }, "running"),
      q.limits?.blocked_until_ms ? [" ", h("span", { class: "badge paused", title: "upstream backpressure" }, "blocked")] : null),
    STATES.map((s) => h("td", { class: ["num", counts[s] > 0 && `has-${s}`], "data-state": s }, String(counts[s]))),
    h("td", { class: "num" }, counts.waiting > 0 ? ageText(oldest) : "—"),
    h("td", { class: "chart-cell" },
      barChart(hist.completed, hist.failed, { label: `${name}: ${hist.done} completed, ${hist.bad} failed in the last hour` }),
      h("span", { class: "chart-note", title: "finished in the last hour / in the last minute" },
        `${hist.done + hist.bad}/h · ${lastMinute(q)}/min`)),
    h("td", { class: "chart-cell" },
      rateChart(hist.rates, { label: `${name}: failure rate per minute` }),
      h("span", { class: "chart-note" }, percentText(hist.failureRate))),
  );
}
