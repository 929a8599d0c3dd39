// Schedules: every schedule with its timing, next and last run; pause/resume and run now (admin).

import * as api from "../api.js";
import { h, link, replace } from "../dom.js";
import { ageText, timeText } from "../format.js";
import { actionButton, errorBox } from "../ui.js";

function timing(s) {
  if (s.cron) return `cron ${s.cron} (${s.tz})`;
  return `every ${ageText((s.interval_s ?? 0) * 1000)}`;
}

function when(iso) {
  if (!iso) return "—";
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? String(iso) : timeText(ms);
}

export async function renderSchedules(container) {
  const table = h("div", { class: "table-wrap" });
  replace(container, h("h2", {}, "Schedules"), table);

  async function refresh() {
    const { schedules, broken } = await api.listSchedules();
    const rows = schedules.map((s) => {
      const builtin = s.kind !== "job";
      const last = s.last_run;
      return h("tr", { "data-schedule": String(s.id) },
        h("td", { class: "job-name" }, String(s.id)),
        h("td", {}, builtin ? h("span", { class: "badge" }, `built-in ${s.kind}`) : [link(String(s.queue), "queues", String(s.queue)), " / ", String(s.task)]),
        h("td", {}, timing(s)),
        h("td", { "data-testid": "next-run" }, s.paused ? "—" : when(s.next_run)),
        h("td", {}, last ? [when(last.at), last.job_id ? [" · ", builtin ? String(last.job_id) : link(String(last.job_id), "jobs", String(s.queue), String(last.job_id))] : null,
          last.skipped ? h("span", { class: "muted" }, ` (${last.skipped} missed)`) : null] : "never"),
        h("td", {}, s.paused ? h("span", { class: "badge paused", "data-testid": "schedule-paused" }, "paused")
          : h("span", { class: "badge running" }, "active")),
        h("td", { class: "actions" },
          s.paused
            ? actionButton("Resume", () => api.resumeSchedule(s.id), { after: refresh })
            : actionButton("Pause", () => api.pauseSchedule(s.id), { after: refresh }),
          actionButton("Run now", async () => {
            const r = await api.runSchedule(s.id);
            return r.job_id ? `job ${r.job_id}` : "at the next scheduler pass";
          }, { after: refresh })),
      );
    });
    // A stored definition no scheduler can read (edited by hand): shown, not hidden, with why; a PUT
    // of its id (or the code that declares it) repairs it.
    for (const b of broken) {
      rows.push(h("tr", { "data-schedule": String(b.id), "data-testid": "schedule-broken" },
        h("td", { class: "job-name" }, String(b.id)),
        h("td", { colspan: 5, class: "error-text" }, `cannot be read: ${String(b.error)}`),
        h("td", {}, h("span", { class: "badge paused" }, "broken"))));
    }
    replace(table, h("table", { class: "schedules", "data-testid": "schedules-table" },
      h("thead", {}, h("tr", {}, ["Id", "Runs", "Timing", "Next run", "Last run", "Status", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No schedules.")))));
  }

  await refresh().catch((err) => replace(table, errorBox(err)));
  return { refresh };
}
