// JSON API client. The key (keystore.js) goes only in the Authorization header: browsers never
// attach it on their own, so a cross-site page cannot make authenticated requests.

import { getKey } from "./keystore.js";

export { clearKey, getKey, setKey } from "./keystore.js";

const q = encodeURIComponent;
// Where the API lives: "" when the dashboard is at /dashboard/, "/conveyor" when the API is mounted
// inside another app at /conveyor (the dashboard is then at /conveyor/dashboard/).
const BASE = location.pathname.replace(/\/dashboard(\/.*)?$/, "");

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function errorMessage(status, body) {
  if (body && typeof body === "object") {
    const d = body.detail ?? body.error ?? body.message;
    if (typeof d === "string") return d;
    if (d && typeof d === "object" && typeof d.message === "string") return d.message;
    if (Array.isArray(d)) return d.map((e) => (e && e.msg) || JSON.stringify(e)).join("; ");
  }
  return `HTTP ${status}`;
}

export async function request(method, path, { body, key, params } = {}) {
  const headers = { Accept: "application/json" };
  const token = key ?? getKey();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let url = BASE + path;
  if (params) {
    const usp = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "") usp.set(k, String(v));
    }
    const qs = usp.toString();
    if (qs) url += `?${qs}`;
  }
  const resp = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
    redirect: "error",
  });
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    if (resp.status === 401 && key === undefined) onUnauthorized();
    throw new ApiError(resp.status, errorMessage(resp.status, data));
  }
  return data;
}

const get = (path, params) => request("GET", path, { params });
const post = (path, body) => request("POST", path, { body: body ?? {} });
const del = (path) => request("DELETE", path);

// --- who am I
export const whoami = (key) => request("GET", "/api/dashboard/me", { key });

// --- queues
export async function listQueues() {
  const data = await get("/api/queues", { all: "true" });  // every queue in Redis, declared or not
  return Array.isArray(data) ? data : data.queues ?? [];
}
export const getQueue = (name) => get(`/api/queues/${q(name)}`);
export const pauseQueue = (name) => post(`/api/queues/${q(name)}/pause`);
export const resumeQueue = (name) => post(`/api/queues/${q(name)}/resume`);
export const retryAllFailed = (name) => post(`/api/queues/${q(name)}/failed:retry-all`);
export const purgeFailed = (name) => del(`/api/queues/${q(name)}/failed`);
export const listJobs = (name, params) => get(`/api/queues/${q(name)}/jobs`, params);

// --- jobs
export const getJob = (queue, id) => get(`/api/jobs/${q(queue)}/${q(id)}`);
export const retryJob = (queue, id) => post(`/api/jobs/${q(queue)}/${q(id)}/retry`);
export const promoteJob = (queue, id) => post(`/api/jobs/${q(queue)}/${q(id)}/promote`);
export const cancelJob = (queue, id) => del(`/api/jobs/${q(queue)}/${q(id)}`);

// A job's event stream (Server-Sent Events) read with fetch, so the key stays in the Authorization
// header (EventSource cannot send one); `lastId` resumes after an event (Last-Event-ID).
export function openJobEvents(queue, id, lastId, signal) {
  const headers = { Accept: "text/event-stream" };
  const token = getKey();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (lastId) headers["Last-Event-ID"] = lastId;
  return fetch(`${BASE}/api/jobs/${q(queue)}/${q(id)}/events`, {
    headers, signal, credentials: "omit", cache: "no-store", redirect: "error",
  });
}

// --- workers
export async function listWorkers() {
  const data = await get("/api/workers");
  return Array.isArray(data) ? data : data.workers ?? [];
}

// --- named limiters
export async function listLimiters() {
  const data = await get("/api/limiters");
  return data.limiters ?? [];
}

// --- cost per tenant and budgets
export const getCosts = (params) => get("/api/costs", params);
export async function listBudgets() {
  const data = await get("/api/budgets");
  return data.budgets ?? [];
}

// --- dashboard additions (conveyor.dashboard.routes)
export const stats = () => get("/api/dashboard/stats");
export const searchJobs = (name, params) => get(`/api/dashboard/queues/${q(name)}/jobs`, params);
export const jobDetails = (queue, id) => get(`/api/dashboard/jobs/${q(queue)}/${q(id)}/details`);
export const removeJob = (queue, id) => post(`/api/dashboard/jobs/${q(queue)}/${q(id)}/remove`);
export const findJob = (id) => get("/api/dashboard/find", { id });
export const bulk = (queue, body) => post(`/api/dashboard/queues/${q(queue)}/bulk`, body);

// --- schedules
export async function listSchedules() {
  const data = await get("/api/schedules");
  return { schedules: data.schedules ?? [], broken: data.broken ?? [] };
}
export const pauseSchedule = (id) => post(`/api/schedules/${q(id)}/pause`);
export const resumeSchedule = (id) => post(`/api/schedules/${q(id)}/resume`);
export const runSchedule = (id) => post(`/api/schedules/${q(id)}/run-now`);

// --- alerts
export const getAlerts = () => get("/api/alerts");

// --- live events: GET /api/events over fetch (EventSource cannot send the Authorization header).
// Calls onEvent(type, data) for each event until `signal` aborts; resolves when the stream ends,
// rejects on an error. `queues` empty: every queue (the server picks at most 50).
export async function followEvents(queues, onEvent, signal) {
  const headers = { Accept: "text/event-stream" };
  const token = getKey();
  if (token) headers.Authorization = `Bearer ${token}`;
  const usp = new URLSearchParams();
  for (const name of queues) usp.append("queue", name);
  const qs = usp.toString();
  const resp = await fetch(`${BASE}/api/events${qs ? `?${qs}` : ""}`, {
    headers, signal, credentials: "omit", cache: "no-store", redirect: "error",
  });
  if (!resp.ok || !resp.body) throw new ApiError(resp.status, `HTTP ${resp.status}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let type = "message";
      let data = null;
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data = line.slice(5).trim();
      }
      if (data !== null) onEvent(type, JSON.parse(data));
    }
  }
}
