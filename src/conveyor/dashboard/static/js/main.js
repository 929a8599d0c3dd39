// Entry point: sign-in, hash routing and the live refresh of the current page: pages that show queues
// and jobs re-read themselves when the server pushes an event of their queues (GET /api/events, one
// connection), with a slow poll for what events do not cover (ages, rates); other pages poll.

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
import { renderLimiters } from "./views/limiters.js";
import { renderCosts } from "./views/costs.js";
import { renderDead } from "./views/dead.js";
import { renderSchedules } from "./views/schedules.js";
import { renderAlerts } from "./views/alerts.js";
import { renderFind } from "./views/find.js";

const REFRESH_MS = 2000;
// With live events: the fallback poll, the pause that coalesces a burst of events into one re-read,
// and the wait before reconnecting a dropped stream.
const LIVE_POLL_MS = 15000;
const LIVE_COALESCE_MS = 250;
const LIVE_RETRY_MS = 3000;
const main = document.getElementById("main");
const nav = document.getElementById("nav");
let view = null;
let timer = null;
let busy = false;
let rerun = false;
let live = null; // AbortController of the page's event stream
let pending = null; // coalescing timer of an event-triggered refresh
let shown = 0; // counts show() calls: a render that ends after a newer one began is dropped

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
  if (page === "limiters") return { page: "limiters", render: renderLimiters, args: {} };
  if (page === "costs") return { page: "costs", render: renderCosts, args: {} };
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
    item("limiters", "Limiters", route("limiters")),
    item("costs", "Costs", route("costs")),
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
  if (live) live.abort();
  live = null;
  if (pending) clearTimeout(pending);
  pending = null;
  delete document.body.dataset.live;
  if (view && view.dispose) view.dispose();
  view = null;
}

async function show() {
  stop();
  const mine = ++shown;
  const r = parseRoute();
  document.body.dataset.page = r.page;
  renderNav(r.page);
  if (!r.render) {
    replace(main, h("h2", {}, "Not found"), h("p", {}, "No such page. "), h("a", { href: route("overview") }, "Back"));
    return;
  }
  const container = h("section", { class: "page" });
  replace(main, container);
  let rendered;
  try {
    rendered = await r.render(container, r.args);
  } catch (err) {
    if (mine === shown) replace(container, errorBox(err));
    return;
  }
  // A slow render (the page signed in on) that ends after the next page's render began must not
  // become the live view: the screen shows the newer page, which would then never refresh.
  if (mine !== shown) {
    if (rendered && rendered.dispose) rendered.dispose();
    return;
  }
  view = rendered;
  refreshAlertBadge();
  if (view && view.refresh) {
    const following = Array.isArray(view.follows);
    timer = setInterval(() => refreshView(view), following ? LIVE_POLL_MS : REFRESH_MS);
    if (following) follow(view);
  }
}

// Re-reads the page; a request for a re-read while one runs is kept and served right after it, so
// the last event of a burst is never lost.
async function refreshView(current) {
  if (document.hidden || current !== view) return;
  if (busy) {
    rerun = true;
    return;
  }
  busy = true;
  try {
    do {
      rerun = false;
      await Promise.all([current.refresh(), refreshAlertBadge()]);
    } while (rerun && current === view);
  } catch (err) {
    if (!(err instanceof api.ApiError && err.status === 401)) console.warn("refresh failed", err);
  } finally {
    busy = false;
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && view && view.refresh) refreshView(view);
});

// Follows the page's queues until the page changes; each burst of events re-reads the page once.
async function follow(current) {
  const controller = new AbortController();
  live = controller;
  document.body.dataset.live = "connecting";
  const onEvent = (type) => {
    if (type === "ready") {
      document.body.dataset.live = "on";
      return;
    }
    if (type === "output") return;  // streamed text changes no record; the job page follows it itself
    if (pending || current !== view) return;
    pending = setTimeout(() => {
      pending = null;
      refreshView(current);
    }, LIVE_COALESCE_MS);
  };
  while (!controller.signal.aborted && current === view) {
    try {
      await api.followEvents(current.follows, onEvent, controller.signal);
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof api.ApiError && err.status === 401) return;
    }
    document.body.dataset.live = "off";
    await new Promise((resolve) => setTimeout(resolve, LIVE_RETRY_MS));
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
