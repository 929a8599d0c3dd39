// Alerts: what fires now, every rule with its state and last reading, and the latest notices.

import * as api from "../api.js";
import { h, link, replace } from "../dom.js";
import { ageText, timeText } from "../format.js";
import { errorBox } from "../ui.js";

function statusBadge(status) {
  return h("span", { class: ["badge", `alert-${String(status).replace(/[^a-z]/g, "")}`], "data-testid": "alert-status" }, String(status));
}

function channels(rule) {
  return (rule.channels ?? []).map((c) => c.type === "email" ? `email ${(c.to ?? []).join(", ")}` : `${c.type} ${c.url ?? `endpoint ${c.endpoint ?? ""}`}`).join("; ");
}

export async function renderAlerts(container) {
  const active = h("div", { class: "panel", "data-testid": "active-alerts" });
  const rules = h("div", { class: "table-wrap" });
  const recent = h("div", { class: "panel", "data-testid": "recent-alerts" });
  replace(container, h("h2", {}, "Alerts"), active, h("h3", {}, "Rules"), rules, recent);

  async function refresh() {
    const data = await api.getAlerts();
    const now = Date.now();
    const firing = data.active ?? [];
    replace(active, h("h3", {}, `Firing now (${firing.length})`),
      firing.length ? h("ul", { class: "alert-list" }, firing.map((a) => h("li", { "data-alert": String(a.rule.id) },
        h("span", { class: ["badge", `sev-${a.rule.severity}`] }, String(a.rule.severity)), " ",
        h("strong", {}, String(a.rule.id)), " — ", String(a.state.summary ?? ""),
        h("span", { class: "muted" }, ` · firing for ${ageText(now - (a.state.fired_ms ?? now))}`))))
        : h("p", { class: "muted", "data-testid": "no-alerts" }, "Nothing is firing."));
    const rows = (data.rules ?? []).map((a) => h("tr", { "data-rule": String(a.rule.id) },
      h("td", { class: "job-name" }, String(a.rule.id)),
      h("td", {}, String(a.rule.kind)),
      h("td", {}, link(String(a.rule.queue), "queues", String(a.rule.queue))),
      h("td", {}, h("span", { class: ["badge", `sev-${a.rule.severity}`] }, String(a.rule.severity))),
      h("td", {}, a.rule.enabled === false ? h("span", { class: "badge" }, "disabled") : statusBadge(a.state.status)),
      h("td", {}, String(a.state.summary || "not evaluated yet"), a.state.error ? h("div", { class: "error-text" }, String(a.state.error)) : null),
      h("td", {}, a.state.evaluated_ms ? `${ageText(now - a.state.evaluated_ms)} ago` : "—"),
      h("td", { class: "muted small-text" }, channels(a.rule)),
      h("td", {}, String(a.source)),
    ));
    replace(rules, h("table", { class: "alerts", "data-testid": "alert-rules" },
      h("thead", {}, h("tr", {}, ["Rule", "Kind", "Queue", "Severity", "State", "Last reading", "Evaluated", "Channels", "Source"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No alert rules. Declare them with app.alert(...) or PUT /api/alerts.")))));
    const notices = data.recent ?? [];
    replace(recent, h("h3", {}, "Recent notices"),
      notices.length ? h("table", { class: "kv", "data-testid": "notices" }, h("tbody", {}, notices.map((n) => h("tr", { "data-notice": String(n.id) },
        h("td", {}, timeText(n.at_ms)),
        h("td", {}, h("span", { class: ["badge", n.kind === "resolved" ? "alert-ok" : "alert-firing"] }, String(n.kind))),
        h("td", { class: "job-name" }, String(n.rule?.id ?? "")),
        h("td", {}, String(n.summary ?? "")),
      )))) : h("p", { class: "muted" }, "No notices sent yet."));
  }

  await refresh().catch((err) => replace(rules, errorBox(err)));
  return { refresh };
}
