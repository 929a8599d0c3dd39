// Entry point: sign-in, hash routing and the 2-second live refresh of the current page.

import * as api from "./api.js";
import { askOtherTabs, setRemoteSignOutHandler } from "./keystore.js";
import { h, replace, route } from "./dom.js";
import { canAdmin, identity, setIdentity } from "./session.js";
import { errorBox } from "./ui.js";
import { renderSignIn } from "./views/signin.js";
import { renderOverview } from "./views/overview.js";
import { renderQueue } from "./views/queue.js";
import { renderJob } from "./views/job.js";
import { renderFlow } from "./views/flow.js";
import { renderWorkers } from "./views/workers.js";
import { renderDead } from "./views/dead.js";
import { renderSchedules } from "./views/schedules.js";
import { renderAlerts } from "./views/alerts.js";
import { renderFind } from "./views/find.js";

const REFRESH_MS = 2000;
const main = document.getElementById("main");
const nav = document.getElementById("nav");
let view = null;
let timer = null;
let busy = false;

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const parts = raw ? raw.split("/").map(decodeURIComponent) : [];
  const [page, ...rest] = parts;
  if (!page || page === "overview") return { page: "overview", render: renderOverview, args: {} };
  if (page === "queues" && rest.length >= 1) {
    return { page: "queues", render: renderQueue, args: { queue: rest[0], state: rest[1] || "waiting" } };
  }
  if (page === "jobs" && rest.length >= 2) return { page: "jobs", render: renderJob, args: { queue: rest[0], id: rest[1] } };
  if (page === "flows" && rest.length >= 2) return { page: "flows", render: renderFlow, args: { queue: rest[0], id: rest[1] } };
  if (page === "workers") return { page: "workers", render: renderWorkers, args: {} };
  if (page === "dead") return { page: "dead", render: renderDead, args: {} };
  if (page === "schedules") return { page: "schedules", render: renderSchedules, args: {} };
  if (page === "alerts") return { page: "alerts", render: renderAlerts, args: {} };
  if (page === "find" && rest.length >= 1) return { page: "find", render: renderFind, args: { id: rest[0] } };
  return { page: "missing", render: null, args: {} };
}

function renderNav(page) {
  const item = (id, label, href) => h("a", { href, class: page === id ? "current" : null, "data-nav": id }, label);
  const me = identity();
  replace(
    nav,
    h("span", { class: "brand" }, "Conveyor"),
    item("overview", "Overview", route("overview")),
    item("dead", "Dead letters", route("dead")),
    item("workers", "Workers", route("workers")),
    item("schedules", "Schedules", route("schedules")),
    h("a", { href: route("alerts"), class: page === "alerts" ? "current" : null, "data-nav": "alerts" },
      "Alerts", " ", alertBadge),
    h("span", { class: "spacer" }),
    findForm(),
    h("span", { class: "who", "data-testid": "identity" },
      me.name ? String(me.name) : "signed in",
      " · ",
      canAdmin() ? "admin" : "read-only"),
    h("button", { type: "button", class: "btn link", "data-testid": "sign-out", onclick: signOut }, "Sign out"),
  );
}

const alertBadge = h("span", { class: "badge alert-count", "data-testid": "alert-count", hidden: true });

async function refreshAlertBadge() {
  try {
    const n = ((await api.getAlerts()).active ?? []).length;
    alertBadge.textContent = String(n);
    alertBadge.hidden = n === 0;
  } catch {
    alertBadge.hidden = true;
  }
}

function findForm() {
  const input = h("input", { type: "search", placeholder: "find job id", "aria-label": "Find job by id", maxlength: 200,
    "data-testid": "find-id" });
  const form = h("form", { class: "find", role: "search" }, input);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = input.value.trim();
    if (id) location.hash = route("find", id);
  });
  return form;
}

function stop() {
  if (timer) clearInterval(timer);
  timer = null;
  if (view && view.dispose) view.dispose();
  view = null;
}

async function show() {
  stop();
  const r = parseRoute();
  document.body.dataset.page = r.page;
  renderNav(r.page);
  if (!r.render) {
    replace(main, h("h2", {}, "Not found"), h("p", {}, "No such page. "), h("a", { href: route("overview") }, "Back"));
    return;
  }
  const container = h("section", { class: "page" });
  replace(main, container);
  try {
    view = await r.render(container, r.args);
  } catch (err) {
    replace(container, errorBox(err));
    return;
  }
  refreshAlertBadge();
  if (view && view.refresh) {
    timer = setInterval(async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        await Promise.all([view.refresh(), refreshAlertBadge()]);
      } catch (err) {
        if (!(err instanceof api.ApiError && err.status === 401)) console.warn("refresh failed", err);
      } finally {
        busy = false;
      }
    }, REFRESH_MS);
  }
}

function signOut() {
  stop();
  api.clearKey(true);
  setIdentity(null);
  start();
}

setRemoteSignOutHandler(() => {
  stop();
  setIdentity(null);
  start();
});

async function enter(me) {
  setIdentity(me);
  window.addEventListener("hashchange", show);
  document.body.classList.toggle("readonly", !canAdmin());
  await show();
}

async function start() {
  let key = api.getKey();
  if (!key) {
    // "Remember me" in another tab of this browser hands the key over (keystore.js).
    key = await askOtherTabs();
    if (key) api.setKey(key, true);
  }
  try {
    // With a stored key, check it is still valid; without one, an API running with auth turned
    // off (CONVEYOR_API_AUTH=0) answers anyway and no sign-in is needed.
    await enter(await api.whoami(key ?? ""));
    return;
  } catch (err) {
    if (key) api.clearKey();
  }
  window.removeEventListener("hashchange", show);
  document.body.dataset.page = "signin";
  replace(nav, h("span", { class: "brand" }, "Conveyor"));
  renderSignIn(main, async (newKey, remember) => {
    const me = await api.whoami(newKey);
    api.setKey(newKey, remember);
    await enter(me);
  });
}

api.setUnauthorizedHandler(() => {
  stop();
  api.clearKey();
  start();
});

start();
