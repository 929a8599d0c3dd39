// A job id looked up in every queue; one match opens the job page at once.

import * as api from "../api.js";
import { h, link, replace, route } from "../dom.js";
import { timeText } from "../format.js";
import { errorBox, stateBadge } from "../ui.js";

export async function renderFind(container, { id }) {
  const body = h("div", {});
  replace(container, h("h2", {}, "Find job ", h("code", {}, id)), body);
  try {
    const { jobs } = await api.findJob(id);
    if (jobs.length === 1) {
      location.replace(route("jobs", jobs[0].queue, jobs[0].id));
      return null;
    }
    replace(body, jobs.length ? h("table", { class: "jobs", "data-testid": "find-results" }, h("tbody", {}, jobs.map((j) => h("tr", {},
      h("td", {}, link(String(j.queue), "queues", String(j.queue))),
      h("td", {}, link(String(j.id), "jobs", String(j.queue), String(j.id))),
      h("td", { class: "job-name" }, String(j.name ?? "")),
      h("td", {}, stateBadge(j.state)),
      h("td", {}, timeText(j.created_ms)),
    )))) : h("p", { class: "muted", "data-testid": "find-none" }, "No queue has a job with this id."));
  } catch (err) {
    replace(body, errorBox(err));
  }
  return null;
}
