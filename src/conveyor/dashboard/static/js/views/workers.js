// Workers page: the live worker registry as reported by GET /api/workers.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { ageText, jsonText, timeText } from "../format.js";
import { errorBox } from "../ui.js";

const SHOWN = ["id", "worker_id", "host", "hostname", "pid", "queues", "concurrency", "counts", "active",
  "started_ms", "last_beat_ms", "last_seen_ms", "heartbeat_ms"];

/** Per-queue "active / concurrency" lines from the registry record (numbers or per-queue maps). */
function load(w) {
  const conc = w.concurrency;
  const counts = w.counts && typeof w.counts === "object" ? w.counts : {};
  if (conc && typeof conc === "object") {
    return Object.entries(conc).map(([q, n]) => `${q}: ${counts[q]?.active ?? "?"} / ${n}`).join("\n");
  }
  return `${w.active ?? "?"} / ${conc ?? "?"}`;
}

function processed(w) {
  if (!w.counts || typeof w.counts !== "object") return "—";
  let done = 0;
  let failed = 0;
  for (const c of Object.values(w.counts)) {
    done += Number(c?.processed ?? 0) || 0;
    failed += Number(c?.failed ?? 0) || 0;
  }
  return `${done} (${failed} failed)`;
}

export async function renderWorkers(container) {
  const table = h("div", { class: "table-wrap" });
  replace(container, h("h2", {}, "Workers"), table);

  async function refresh() {
    const workers = await api.listWorkers();
    const now = Date.now();
    const rows = workers.map((w) => {
      const extra = {};
      for (const [k, v] of Object.entries(w)) if (!SHOWN.includes(k) && v !== null && v !== undefined) extra[k] = v;
      const seen = w.last_beat_ms ?? w.last_seen_ms ?? w.heartbeat_ms ?? null;
      const queues = w.queues ?? [];
      return h("tr", { "data-worker": String(w.id ?? w.worker_id ?? "") },
        h("td", { class: "job-name" }, String(w.id ?? w.worker_id ?? "")),
        h("td", {}, String(w.host ?? w.hostname ?? "")),
        h("td", { class: "num" }, String(w.pid ?? "")),
        h("td", {}, Array.isArray(queues) ? queues.map(String).join(", ") : jsonText(queues)),
        h("td", {}, h("pre", { class: "small" }, load(w))),
        h("td", { class: "num" }, processed(w)),
        h("td", {}, timeText(w.started_ms)),
        h("td", {}, seen ? `${ageText(Math.max(0, now - seen))} ago` : "—"),
        h("td", {}, Object.keys(extra).length ? h("pre", { class: "small" }, jsonText(extra)) : ""),
      );
    });
    replace(table, h("table", { class: "workers", "data-testid": "workers-table" },
      h("thead", {}, h("tr", {}, ["Worker", "Host", "Pid", "Queues", "Active / concurrency", "Processed", "Started",
        "Last heartbeat", "Details"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No workers online.")))));
  }

  await refresh().catch((err) => replace(table, errorBox(err)));
  return { refresh };
}
