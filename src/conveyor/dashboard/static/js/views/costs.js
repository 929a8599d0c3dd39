// Costs page: tokens and cost per tenant (group) and task over the last days (GET /api/costs), and
// each tenant's budget with this period's spend (GET /api/budgets). Everything shown as plain text.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { ageText } from "../format.js";
import { errorBox } from "../ui.js";

const money = (v) => (Number(v) || 0).toFixed(6);
const count = (v) => (Number(v) || 0).toLocaleString("en-US");
// The part of a row's tokens that is an estimate (a provider that billed without reporting usage).
const estimated = (r) => (Number(r.runs_estimated) || 0)
  ? `${count(r.tokens_estimated)} (${count(r.runs_estimated)} run${Number(r.runs_estimated) === 1 ? "" : "s"})` : "—";

function groupsTable(report) {
  const rows = (report.groups ?? []).map((g) => h("tr", { "data-group": g.group ?? "" },
    h("td", {}, g.group ?? "(no group)"),
    h("td", { class: "num" }, count(g.runs)),
    h("td", { class: "num" }, count(g.tokens_in)),
    h("td", { class: "num" }, count(g.tokens_out)),
    h("td", { class: "num" }, estimated(g)),
    h("td", { class: "num" }, `${money(g.cost)} ${report.currency}`)));
  return h("table", { "data-testid": "costs-groups" },
    h("thead", {}, h("tr", {}, ["Group", "Runs", "Tokens in", "Tokens out", "Estimated", "Cost"]
      .map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No usage recorded."))));
}

function rowsTable(report) {
  const rows = (report.rows ?? []).map((r) => h("tr", {},
    h("td", {}, r.day), h("td", {}, r.group ?? "(no group)"), h("td", { class: "job-name" }, r.task),
    h("td", { class: "num" }, count(r.runs)), h("td", { class: "num" }, count(r.tokens_in)),
    h("td", { class: "num" }, count(r.tokens_out)), h("td", { class: "num" }, estimated(r)),
    h("td", { class: "num" }, money(r.cost))));
  return h("table", { "data-testid": "costs-rows" },
    h("thead", {}, h("tr", {}, ["Day", "Group", "Task", "Runs", "Tokens in", "Tokens out", "Estimated",
      `Cost ${report.currency}`]
      .map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

function budgetsTable(budgets) {
  const rows = budgets.map((b) => h("tr", { "data-budget": b.group, class: `budget-${b.status}` },
    h("td", {}, b.group),
    h("td", {}, b.period),
    h("td", { class: "num" }, `${money(b.spent)} ${b.currency}`),
    h("td", { class: "num" }, b.soft === null ? "—" : money(b.soft)),
    h("td", { class: "num" }, b.hard === null ? "—" : money(b.hard)),
    h("td", {}, b.on_hard),
    h("td", {}, b.status),
    h("td", {}, ageText(b.resets_in_ms))));
  return h("table", { "data-testid": "budgets-table" },
    h("thead", {}, h("tr", {}, ["Group", "Period", "Spent", "Soft", "Hard", "At hard", "Status", "Resets in"]
      .map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No budgets set."))));
}

export async function renderCosts(container) {
  const summary = h("p", { class: "muted", "data-testid": "costs-summary" });
  const groups = h("div", { class: "table-wrap" });
  const budgets = h("div", { class: "table-wrap" });
  const detail = h("div", { class: "table-wrap" });
  replace(container, h("h2", {}, "Costs"), summary, groups, h("h3", {}, "Budgets"), budgets,
    h("h3", {}, "Per day and task"), detail);

  async function refresh() {
    const [report, budgetList] = await Promise.all([api.getCosts(), api.listBudgets()]);
    const t = report.totals ?? {};
    summary.textContent = `${report.since} to ${report.until} (UTC): ${count(t.runs)} runs, ` +
      `${count(t.tokens_in)} tokens in, ${count(t.tokens_out)} out, ${money(t.cost)} ${report.currency}` +
      ((Number(t.runs_estimated) || 0) ? `; ${count(t.tokens_estimated)} tokens of ${count(t.runs_estimated)} ` +
        "run(s) are estimates" : "");
    replace(groups, groupsTable(report));
    replace(budgets, budgetsTable(budgetList));
    replace(detail, rowsTable(report));
  }

  await refresh().catch((err) => replace(groups, errorBox(err)));
  return { refresh };
}
