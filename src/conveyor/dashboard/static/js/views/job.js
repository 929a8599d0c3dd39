// Job page: data and options, progress, streamed output, logs, result or error with stack, attempts
// timeline and actions. Live: re-read on each burst of its queue's events (a job retried or removed
// elsewhere shows it, final or not); the streamed output is followed over the job's event stream as
// it is written (output.js).

import * as api from "../api.js";
import { h, link, replace, route } from "../dom.js";
import { ageText, jsonText, progressFraction, timeText } from "../format.js";
import { followOutput, partialCards } from "../output.js";
import { hasScope } from "../session.js";
import { actionButton, errorBox, stateBadge } from "../ui.js";
import { jsonBlock } from "./common.js";


export async function renderJob(container, { queue, id }) {
  const head = h("div", { class: "job-header" });
  const actions = h("div", { class: "actions", "data-testid": "job-actions" });
  const body = h("div", { class: "job-body" });
  replace(container,
    h("p", { class: "crumbs" }, link("Overview", "overview"), " / ", link(queue, "queues", queue), " / job"),
    head, actions, body);
  let lastKey = null;
  let lastJobKey = null;
  let details = null;
  let ticks = 0;
  const outputBox = h("div", { "data-testid": "job-output-box" });
  const outputSection = section("Output", outputBox, "output");
  outputSection.hidden = true;
  const stopOutput = followOutput(queue, id, (out) => {
    outputSection.hidden = !out.text && !out.truncated;
    replace(outputBox, outputView(out));
  });

  async function refresh(force = false) {
    let job;
    try {
      job = await api.getJob(queue, id);
    } catch (err) {
      if (err.status === 404) {
        replace(head, h("h2", {}, "Job ", id));
        replace(body, h("p", { class: "muted", "data-testid": "job-missing" }, "This job does not exist (any more)."));
        replace(actions);
        return;
      }
      throw err;
    }
    // Logs and the timeline cost an event-stream scan: re-read them when the record changed, and
    // otherwise every few ticks (log lines alone do not change the record).
    const jobKey = JSON.stringify(job);
    ticks += 1;
    if (force || !details || jobKey !== lastJobKey || ticks % 3 === 0) {
      details = await api.jobDetails(queue, id).catch(() => ({ logs: null, timeline: null }));
    }
    lastJobKey = jobKey;
    const key = JSON.stringify([job, details]);
    if (!force && key === lastKey) return;
    lastKey = key;
    renderAll(job, details);
  }

  function renderAll(job, details) {
    const state = String(job.state ?? "");
    replace(head,
      h("h2", {}, h("span", { class: "job-title" }, String(job.name ?? "")), " ", stateBadge(state)),
      h("dl", { class: "facts" },
        fact("Id", String(job.id ?? id), "job-id"),
        fact("Queue", queue),
        fact("Attempts", `${job.attempts_made ?? job.attempts ?? 0} of ${job.max_attempts ?? "?"}`, "job-attempts"),
        fact("Priority", String(job.priority ?? 0)),
        fact("Worker", job.worker ? String(job.worker) : "—"),
        fact("Created", timeText(job.created_ms)),
        fact("Started", timeText(job.started_ms)),
        fact("Finished", timeText(job.finished_ms)),
        job.due_ms ? fact(job.next_attempt_ms ? "Next attempt" : "Due", `${timeText(job.due_ms)} (${job.due_ms > Date.now() ? `in ${ageText(job.due_ms - Date.now())}` : "now"})`, "job-due") : null,
        job.cancel_requested ? fact("Cancel", "requested") : null,
        job.parent ? fact("Parent", link(`${job.parent.queue} · ${job.parent.id}`, "jobs", job.parent.queue, job.parent.id), "job-parent") : null,
      ),
      job.parent || (job.children ?? []).length
        ? h("p", {}, link("Flow view", "flows", queue, id)) : null,
    );
    const after = () => refresh(true);
    replace(actions,
      ["failed", "cancelled"].includes(state) ? actionButton("Retry", () => api.retryJob(queue, id), { after }) : null,
      state === "delayed" ? actionButton("Promote", () => api.promoteJob(queue, id), { after }) : null,
      ["waiting", "delayed", "active"].includes(state) && !job.cancel_requested
        ? actionButton("Cancel", () => api.cancelJob(queue, id), { confirm: `Cancel job ${id}?`, danger: true, after }) : null,
      state !== "active" ? actionButton("Remove", () => api.removeJob(queue, id), {
        confirm: `Delete job ${id} and its logs permanently?`, danger: true,
        after: () => { location.hash = route("queues", queue, state); },
      }) : null,
    );
    const frac = progressFraction(job.progress);
    const sections = [];
    sections.push(section("Progress", [
      frac !== null ? h("progress", { max: 100, value: Math.round(frac * 100), "data-testid": "progress" }) : null,
      frac !== null ? h("span", { class: "muted" }, ` ${Math.round(frac * 100)} %`) : null,
      job.progress !== null && job.progress !== undefined && frac === null ? jsonBlock(job.progress, "progress-json") : null,
      job.progress === null || job.progress === undefined ? h("p", { class: "muted" }, "No progress reported.") : null,
    ]));
    if (state === "failed" || (job.error && state !== "completed")) sections.push(section("Error", errorView(job.error), "error"));
    if (state === "completed") {
      sections.push(section("Result", job.data_hidden ? h("p", { class: "muted" }, "Hidden: this key lacks the read-data scope.") : jsonBlock(job.result, "job-result")));
    }
    if ((job.children ?? []).length) sections.push(section("Children", childrenView(job.children), "children"));
    sections.push(outputSection);
    sections.push(section("Data", !job.data_hidden ? jsonBlock(job.data, "job-data")
      : h("p", { class: "muted" }, hasScope("read-data") ? "No data." : "Hidden: this key lacks the read-data scope.")));
    sections.push(section("Options", jsonBlock(job.options ?? {}, "job-options")));
    sections.push(section("Attempts", timelineView(details.timeline, job), "timeline"));
    sections.push(section("Logs", logsView(details.logs ?? job.logs), "logs"));
    replace(body, sections);
  }

  await refresh(true).catch((err) => replace(body, errorBox(err)));
  return {
    refresh: () => refresh(),
    dispose: stopOutput,
    follows: [queue],
  };
}

function childrenView(children) {
  return h("ul", { class: "children", "data-testid": "job-children" }, children.map((c) => h("li", {},
    stateBadge(String(c.state ?? "removed")), " ",
    link(String(c.name ?? c.id), "jobs", c.queue, c.id), h("span", { class: "muted" }, ` ${c.queue} · ${c.id}`))));
}

function outputView(out) {
  const cards = partialCards(out.text);
  return [
    cards.length ? h("ol", { class: "cards", "data-testid": "output-cards" },
      cards.map((c) => h("li", {}, h("strong", {}, c.front), " — ", c.back))) : null,
    h("pre", { class: "output", "data-testid": "job-output" }, out.text),
    out.truncated ? h("p", { class: "muted", "data-testid": "output-truncated" }, "Output truncated at the size limit.") : null,
    !out.done ? h("p", { class: "muted" }, "Streaming…") : null,
  ];
}

function fact(label, value, testid = null) {
  return [h("dt", {}, label), h("dd", { "data-testid": testid }, value)];
}

function section(title, content, testid = null) {
  return h("section", { class: "panel", "data-testid": testid && `section-${testid}` }, h("h3", {}, title), content);
}

function errorView(error) {
  if (!error) return h("p", { class: "muted" }, "No error recorded.");
  if (typeof error !== "object") return h("pre", { class: "error-text", "data-testid": "job-error" }, String(error));
  const type = error.type ?? error.kind ?? "Error";
  const message = error.message ?? error.msg ?? "";
  const stack = error.stack ?? error.traceback ?? null;
  const rest = { ...error };
  for (const k of ["type", "kind", "message", "msg", "stack", "traceback"]) delete rest[k];
  return [
    h("p", { class: "error-text", "data-testid": "job-error" }, h("strong", {}, String(type)), ": ", String(message)),
    stack ? h("pre", { class: "stack", "data-testid": "job-stack" }, Array.isArray(stack) ? stack.join("\n") : String(stack)) : null,
    Object.keys(rest).length ? h("pre", { class: "json" }, jsonText(rest)) : null,
  ];
}

function timelineView(timeline, job) {
  if (!Array.isArray(timeline) || !timeline.length) {
    return h("p", { class: "muted" }, job.attempts_made ? "No attempt events kept for this job." : "Not started yet.");
  }
  return h("ol", { class: "timeline", "data-testid": "timeline" }, timeline.map((a, i) => {
    const dur = a.duration_ms ?? (a.ended_ms && a.started_ms ? a.ended_ms - a.started_ms : null);
    return h("li", { class: ["attempt", `outcome-${String(a.outcome ?? "running").replace(/[^a-z]/g, "")}`] },
      h("span", { class: "attempt-n", title: `attempt ${a.attempt ?? "?"} of its run` }, `#${i + 1}`),
      h("span", {}, stateBadge(a.outcome ?? "running")),
      h("span", {}, timeText(a.started_ms)),
      h("span", { class: "muted" }, dur !== null ? ageText(dur) : "running"),
      h("span", { class: "muted" }, a.worker ? `on ${a.worker}` : ""),
      a.error ? h("span", { class: "attempt-error" }, String(a.error)) : null,
    );
  }));
}

function logsView(logs) {
  if (!Array.isArray(logs) || !logs.length) return h("p", { class: "muted" }, "No log lines.");
  return h("pre", { class: "logs", "data-testid": "job-logs" }, logs.map((l) => String(l)).join("\n"));
}
