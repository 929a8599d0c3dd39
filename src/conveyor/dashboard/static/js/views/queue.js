// Queue page: jobs by state with pagination, search by id or name, group filter, bulk actions,
// pause/resume, and the queue's limits and group backlog when the API reports them.

import * as api from "../api.js";
import { h, link, replace, route } from "../dom.js";
import { STATES, ageText, percentText, timeText } from "../format.js";
import { history, isPaused, queueCounts } from "../queues.js";
import { canAdmin } from "../session.js";
import { actionButton, confirmAction, errorBox, notify, stateBadge } from "../ui.js";
import { barChart, rateChart } from "../charts.js";
import { limitsView } from "./limits.js";

const PAGE = 25;

function dueText(j) {
  const at = j.next_attempt_ms ?? j.due_ms;
  if (at === null || at === undefined) return "—";
  const left = at - Date.now();
  const label = j.next_attempt_ms ? "next attempt" : "due";
  return `${label} ${timeText(at)} (${left > 0 ? `in ${ageText(left)}` : "now"})`;
}

function errorText(error) {
  if (!error) return "";
  if (typeof error !== "object") return String(error).slice(0, 300);
  const type = error.type ?? "Error";
  return `${type}: ${String(error.message ?? "")}`.slice(0, 300);
}

export async function renderQueue(container, { queue, state }) {
  if (!STATES.includes(state)) state = "waiting";
  const header = h("div", { class: "queue-header" });
  const extras = h("div", { class: "queue-extras" });
  const tabs = h("nav", { class: "tabs" });
  const bulk = h("div", { class: "bulk" });
  const list = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const selected = new Set();
  let cursors = [null];
  let page = 0;
  let nextCursor = null;
  let cutNote = null;
  let filter = { id: "", name: "", group: "" };
  let rows = [];

  const idInput = h("input", { type: "search", placeholder: "job id", "aria-label": "Job id", maxlength: 200, "data-testid": "search-id" });
  const nameInput = h("input", { type: "search", placeholder: "name contains", "aria-label": "Job name", maxlength: 200, "data-testid": "search-name" });
  const groupInput = h("input", { type: "search", placeholder: "group", "aria-label": "Group", maxlength: 200, "data-testid": "filter-group" });
  const form = h("form", { class: "search", "data-testid": "search-form" }, idInput, nameInput, groupInput,
    h("button", { type: "submit", class: "btn" }, "Search"),
    h("button", { type: "button", class: "btn link", onclick: () => { idInput.value = nameInput.value = groupInput.value = ""; apply(); } }, "Clear"));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); apply(); });

  function apply() {
    filter = { id: idInput.value.trim(), name: nameInput.value.trim(), group: groupInput.value.trim() };
    cursors = [null];
    page = 0;
    selected.clear();
    refresh().catch((err) => replace(list, errorBox(err)));
  }

  replace(container,
    h("p", { class: "crumbs" }, link("Overview", "overview"), " / ", "queue"),
    header, extras, tabs, form, bulk, list, pager);

  async function loadJobs() {
    if (filter.id) {
      try {
        const job = await api.getJob(queue, filter.id);
        return { jobs: [job], next: null };
      } catch (err) {
        if (err.status === 404) return { jobs: [], next: null };
        throw err;
      }
    }
    const params = { state, limit: PAGE, cursor: cursors[page] ?? undefined };
    let data;
    if (filter.name || filter.group) {
      data = await api.searchJobs(queue, { ...params, name: filter.name, group: filter.group });
    } else {
      data = await api.listJobs(queue, params);
    }
    const jobs = Array.isArray(data) ? data : data.jobs ?? data.items ?? [];
    return { jobs, next: data.next_cursor ?? data.cursor ?? null, cut: data.cut_message ?? null };
  }

  async function refresh() {
    const [q, loaded, stats] = await Promise.all([api.getQueue(queue), loadJobs(), api.stats().catch(() => null)]);
    rows = loaded.jobs;
    nextCursor = loaded.next;
    cutNote = loaded.cut ?? null;
    renderHeader(q);
    renderTabs(q);
    renderExtras(q, stats?.queues?.[queue]);
    renderList();
    renderBulk();
    renderPager();
  }

  function renderHeader(q) {
    const paused = isPaused(q);
    replace(header,
      h("h2", {}, queue, " ", paused ? h("span", { class: "badge paused", "data-testid": "paused" }, "paused") : h("span", { class: "badge running", "data-testid": "running" }, "running")),
      h("div", { class: "actions" },
        paused
          ? actionButton("Resume", () => api.resumeQueue(queue), { after: refresh })
          : actionButton("Pause", () => api.pauseQueue(queue), { after: refresh }),
      ),
    );
  }

  function renderTabs(q) {
    const counts = queueCounts(q);
    replace(tabs, STATES.map((s) => h("a", {
      href: route("queues", queue, s), class: ["tab", s === state && "current"], "data-tab": s,
    }, `${s} `, h("span", { class: "count" }, String(counts[s])))));
  }

  function renderExtras(q, stat) {
    const hist = history(stat);
    const t = q.throughput ?? {};
    const activity = h("div", { class: "panel", "data-testid": "activity" }, h("h3", {}, "Last hour"),
      h("div", { class: "activity" },
        barChart(hist.completed, hist.failed, { width: 360, height: 48, label: "completed (green) and failed (red) per minute" }),
        rateChart(hist.rates, { width: 200, height: 48, label: "failure rate per minute" })),
      h("p", { class: "muted" },
        `${hist.done} completed, ${hist.bad} failed in the last hour (failure rate ${percentText(hist.failureRate)}); `,
        `last minute: ${t.completed ?? "—"} completed, ${t.failed ?? "—"} failed`,
        stat?.oldest_waiting_ms != null && queueCounts(q).waiting > 0 ? `; oldest waiting ${ageText(stat.oldest_waiting_ms)}` : ""));
    replace(extras, activity, limitsView(q.limits));
  }

  function renderList() {
    const admin = canAdmin();
    const visible = new Set(rows.map((j) => String(j.id)));
    for (const id of [...selected]) if (!visible.has(id)) selected.delete(id);
    const body = rows.map((j) => {
      const id = String(j.id);
      const box = admin ? h("input", {
        type: "checkbox", "aria-label": `select ${id}`, checked: selected.has(id), "data-testid": "select-job",
        onchange: (ev) => { ev.target.checked ? selected.add(id) : selected.delete(id); renderBulk(); },
      }) : null;
      const group = j.group ?? j.options?.group ?? "";
      return h("tr", { "data-job": id },
        admin ? h("td", {}, box) : null,
        h("td", {}, link(id, "jobs", queue, id)),
        h("td", { class: "job-name" }, String(j.name ?? "")),
        h("td", {}, stateBadge(j.state ?? state)),
        h("td", {}, String(group)),
        h("td", { class: "num" }, `${j.attempts_made ?? j.attempts ?? 0}/${j.max_attempts ?? "?"}`),
        h("td", {}, timeText(j.created_ms)),
        h("td", {}, j.finished_ms ? timeText(j.finished_ms) : j.created_ms ? `${ageText(Date.now() - j.created_ms)} ago` : "—"),
        state === "delayed" ? h("td", { "data-testid": "due" }, dueText(j)) : null,
        state === "failed" ? h("td", { class: "error-text", "data-testid": "job-error-cell" }, errorText(j.error)) : null,
      );
    });
    const allBox = admin ? h("input", {
      type: "checkbox", "aria-label": "select all", checked: rows.length > 0 && selected.size === rows.length,
      onchange: (ev) => { for (const j of rows) ev.target.checked ? selected.add(String(j.id)) : selected.delete(String(j.id)); renderList(); renderBulk(); },
    }) : null;
    replace(list, h("table", { class: "jobs", "data-testid": "jobs-table" },
      h("thead", {}, h("tr", {}, admin ? h("th", {}, allBox) : null,
        h("th", {}, "Id"), h("th", {}, "Name"), h("th", {}, "State"), h("th", {}, "Group"),
        h("th", { class: "num" }, "Attempts"), h("th", {}, "Created"), h("th", {}, "Finished / age"),
        state === "delayed" ? h("th", {}, "Due / next attempt") : null,
        state === "failed" ? h("th", {}, "Error") : null)),
      h("tbody", {}, body.length ? body : h("tr", {}, h("td", { colspan: 9, class: "muted" }, `No ${state} jobs${filter.id || filter.name || filter.group ? " match" : ""}.`)))));
  }

  async function bulkRun(label, fn) {
    const ids = [...selected];
    if (!ids.length) return;
    if (label === "Remove" && !(await confirmAction("Remove jobs?", `Remove ${ids.length} job(s) permanently?`, "Remove"))) return;
    let ok = 0;
    const errors = [];
    for (const id of ids) {
      try {
        await fn(queue, id);
        ok += 1;
        selected.delete(id);
      } catch (err) {
        errors.push(`${id}: ${err.message}`);
      }
    }
    notify(`${label}: ${ok} of ${ids.length} done`, errors.length ? "error" : "info");
    if (errors.length) notify(errors.slice(0, 3).join("; "), "error");
    await refresh();
  }

  async function bulkFiltered(action) {
    const label = { retry: "Retry", remove: "Remove", promote: "Promote" }[action];
    const what = [filter.name && `named like "${filter.name}"`, filter.group && `in group "${filter.group}"`].filter(Boolean).join(" and ");
    if (!(await confirmAction(`${label} all matching?`, `${label} every ${state} job of ${queue} ${what}?${action === "remove" ? " This cannot be undone." : ""}`, label))) return;
    let done = 0;
    try {
      for (let round = 0; round < 1000; round += 1) {
        const r = await api.bulk(queue, { action, state, name: filter.name, group: filter.group });
        done += r.done;
        if (!r.more || r.done === 0) break;
      }
      notify(`${label}: ${done} matching job(s) done`);
    } catch (err) {
      notify(`${label} failed after ${done}: ${err.message}`, "error");
    }
    selected.clear();
    await refresh();
  }

  function renderBulk() {
    if (!canAdmin()) { replace(bulk); return; }
    const n = selected.size;
    const filtering = Boolean(filter.name || filter.group) && !filter.id;
    const fb = (action, label, show) => show && filtering ? h("button", {
      type: "button", class: ["btn", "action", action === "remove" && "danger"], "data-testid": `bulk-${action}-matching`,
      onclick: () => bulkFiltered(action) }, `${label} all matching`) : null;
    const b = (label, fn, show) => show ? h("button", { type: "button", class: ["btn", "action", label === "Remove" && "danger"], disabled: n === 0, "data-testid": `bulk-${label.toLowerCase()}`, onclick: () => bulkRun(label, fn) }, `${label} selected`) : null;
    const finished = ["failed", "cancelled"].includes(state);
    replace(bulk,
      h("span", { class: "muted" }, `${n} selected`),
      b("Retry", api.retryJob, finished),
      b("Promote", api.promoteJob, state === "delayed"),
      b("Remove", api.removeJob, state !== "active"),
      fb("retry", "Retry", finished),
      fb("promote", "Promote", state === "delayed"),
      fb("remove", "Remove", state !== "active"),
      state === "failed" ? actionButton("Retry all failed", () => api.retryAllFailed(queue), { confirm: `Send every failed job of ${queue} back to waiting?`, after: refresh }) : null,
      state === "failed" ? actionButton("Purge failed", () => api.purgeFailed(queue), { confirm: `Delete every failed job of ${queue}? This cannot be undone.`, danger: true, after: refresh }) : null,
    );
  }

  function renderPager() {
    replace(pager,
      h("button", { type: "button", class: "btn", disabled: page === 0, "data-testid": "prev-page", onclick: () => { page -= 1; refresh(); } }, "← Newer"),
      h("span", { class: "muted" }, `page ${page + 1}`),
      h("button", { type: "button", class: "btn", disabled: nextCursor === null || nextCursor === undefined, "data-testid": "next-page", onclick: () => { cursors[page + 1] = nextCursor; page += 1; refresh(); } }, "Older →"),
      cutNote ? h("span", { class: "muted", role: "status", "data-testid": "search-cut" }, cutNote) : null,
    );
  }

  await refresh().catch((err) => replace(list, errorBox(err)));
  return { refresh, follows: [queue] };
}
