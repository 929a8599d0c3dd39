// The queue's limits and group backlog (from Queue.limits_state via /api/dashboard/.../limits).
// Known fields get a readable summary; anything else is still shown, as text.

import { h } from "../dom.js";
import { ageText, jsonText, timeText } from "../format.js";
import { kvTable } from "./common.js";

function limiter(l) {
  if (!l) return "none";
  const parts = [`tokens left: ${l.tokens ?? "?"}`];
  if (l.limit !== undefined) parts.push(`${l.limit} per ${l.per_s ?? 1} s`);
  if (l.burst) parts.push(`burst ${l.burst}`);
  if (l.reopens_in_ms) parts.push(`reopens in ${ageText(l.reopens_in_ms)}`);
  return parts.join(", ");
}

function blocked(ms) {
  return ms ? `${timeText(ms)} (in ${ageText(ms - Date.now())})` : "no";
}

export function limitsView(state) {
  if (!state || typeof state !== "object") return null;
  const conc = state.concurrency;
  const summary = {
    "active jobs": String(state.active ?? "—"),
    concurrency: conc ? `${conc.active} of ${conc.limit} slots in use` : "no limit",
    rate: limiter(state.rate),
    cost: limiter(state.cost),
    "blocked until": blocked(state.blocked_until_ms),
  };
  if (state.waiting && typeof state.waiting === "object") {
    summary.waiting = `${state.waiting.ungrouped ?? 0} ungrouped, ${state.waiting.grouped ?? 0} in groups`;
  }
  if (state.group_defaults) summary["group defaults"] = jsonText(state.group_defaults);
  const panels = [kvTable("Limits", summary, "limits")];
  const groups = state.groups;
  if (groups && typeof groups === "object") {
    const list = Array.isArray(groups.list) ? groups.list : [];
    panels.push(h("div", { class: "panel", "data-testid": "groups" },
      h("h3", {}, "Group backlog"),
      h("p", { class: "muted" },
        `${groups.known ?? 0} groups known: ${groups.ready ?? 0} ready, ${groups.parked ?? 0} parked (rate-limited), `,
        `${groups.capped ?? 0} at their concurrency cap`),
      list.length ? h("table", { class: "kv" },
        h("thead", {}, h("tr", {}, ["Group", "State", "Waiting", "Active", "Weight", "Concurrency", "Rate", "Cost", "Blocked until"].map((t) => h("th", {}, t)))),
        h("tbody", {}, list.map((g) => h("tr", { "data-group": String(g.group ?? "") },
          h("td", {}, String(g.group ?? "")),
          h("td", {}, String(g.state ?? "")),
          h("td", { class: "num" }, String(g.waiting ?? 0)),
          h("td", { class: "num" }, String(g.active ?? 0)),
          h("td", { class: "num" }, String(g.weight ?? 1)),
          h("td", {}, g.concurrency ? String(g.concurrency) : "—"),
          h("td", {}, g.rate ? limiter(g.rate) : "—"),
          h("td", {}, g.cost ? limiter(g.cost) : "—"),
          h("td", {}, g.blocked_until_ms ? blocked(g.blocked_until_ms) : g.reopens_in_ms ? `reopens in ${ageText(g.reopens_in_ms)}` : "—"),
        )))) : null,
    ));
  }
  return panels;
}
