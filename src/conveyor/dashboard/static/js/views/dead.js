// Dead letters: failed jobs of every queue, with retry-all and purge (both confirmed first).

import * as api from "../api.js";
import { h, link, replace } from "../dom.js";
import { timeText } from "../format.js";
import { queueCounts, queueName } from "../queues.js";
import { actionButton, errorBox } from "../ui.js";

const SHOW = 10;

export async function renderDead(container) {
  const body = h("div", {});
  replace(container, h("h2", {}, "Dead letters (failed jobs)"), body);

  async function refresh() {
    const queues = (await api.listQueues()).filter((q) => queueCounts(q).failed > 0);
    queues.sort((a, b) => queueName(a).localeCompare(queueName(b)));
    if (!queues.length) {
      replace(body, h("p", { class: "muted", "data-testid": "no-dead" }, "No failed jobs in any queue."));
      return;
    }
    const blocks = await Promise.all(queues.map(async (q) => {
      const name = queueName(q);
      const count = queueCounts(q).failed;
      const data = await api.listJobs(name, { state: "failed", limit: SHOW });
      const jobs = Array.isArray(data) ? data : data.jobs ?? [];
      return h("div", { class: "panel dead-queue", "data-queue": name },
        h("div", { class: "panel-head" },
          h("h3", {}, link(name, "queues", name, "failed"), ` — ${count} failed`),
          h("div", { class: "actions" },
            actionButton("Retry all", () => api.retryAllFailed(name), { confirm: `Send all ${count} failed jobs of ${name} back to waiting?`, after: refresh }),
            actionButton("Purge", () => api.purgeFailed(name), { confirm: `Delete all ${count} failed jobs of ${name}? This cannot be undone.`, danger: true, after: refresh }),
          )),
        h("table", { class: "jobs" }, h("tbody", {}, jobs.map((j) => h("tr", { "data-job": String(j.id) },
          h("td", {}, link(String(j.id), "jobs", name, String(j.id))),
          h("td", { class: "job-name" }, String(j.name ?? "")),
          h("td", { class: "error-text" }, String(j.error?.message ?? j.error?.type ?? "")),
          h("td", {}, timeText(j.finished_ms)),
        )))),
        count > jobs.length ? h("p", { class: "muted" }, link(`all ${count} failed jobs…`, "queues", name, "failed")) : null,
      );
    }));
    replace(body, blocks);
  }

  await refresh().catch((err) => replace(body, errorBox(err)));
  return { refresh, follows: [] };
}
