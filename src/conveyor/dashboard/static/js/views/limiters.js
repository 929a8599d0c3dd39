// Limiters page: named limiters shared across queues (GET /api/limiters): levels, slots held,
// the adaptive limit, totals and the last hour's usage per minute.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { errorBox } from "../ui.js";

function levels(l) {
  const parts = Object.entries(l.levels ?? {}).map(([dim, v]) =>
    `${dim}: ${v.available} of ${v.limit}/${v.per_s}s${v.reopens_in_ms ? ` (reopens in ${v.reopens_in_ms} ms)` : ""}`);
  return parts.length ? parts.join("\n") : "—";
}

function slots(l) {
  const c = l.concurrency ?? {};
  const limit = c.adaptive_limit ?? c.limit;
  const kind = c.adaptive_limit !== null && c.adaptive_limit !== undefined ? " (adaptive)" : "";
  return `${c.held ?? 0} / ${limit ?? "∞"}${kind}`;
}

function recent(l) {
  const rows = l.recent ?? [];
  const sum = (k) => rows.reduce((a, r) => a + (Number(r[k]) || 0), 0);
  return `${sum("requests")} requests, ${sum("tokens_in")} in / ${sum("tokens_out")} out tokens, ` +
    `${sum("rate_limited")} × 429, ${sum("timeouts")} timeouts`;
}

export async function renderLimiters(container) {
  const table = h("div", { class: "table-wrap" });
  replace(container, h("h2", {}, "Limiters"), table);

  async function refresh() {
    const data = await api.listLimiters();
    const rows = data.map((l) => h("tr", { "data-limiter": String(l.name) },
      h("td", { class: "job-name" }, String(l.name)),
      h("td", {}, slots(l)),
      h("td", {}, h("pre", { class: "small" }, levels(l))),
      h("td", {}, l.paused_until_ms ? new Date(l.paused_until_ms).toISOString() : "—"),
      h("td", {}, recent(l)),
      h("td", { class: "num" }, `${l.totals?.ok ?? 0} ok, ${l.totals?.rate_limited ?? 0} × 429, ${l.totals?.expired ?? 0} expired`),
    ));
    replace(table, h("table", { class: "limiters", "data-testid": "limiters-table" },
      h("thead", {}, h("tr", {}, ["Limiter", "Slots held / limit", "Levels", "Paused until", "Last hour",
        "Totals"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No limiters declared.")))));
  }

  await refresh().catch((err) => replace(table, errorBox(err)));
  return { refresh };
}
