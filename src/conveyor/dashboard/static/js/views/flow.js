// Flow page: the tree of a flow job (its children, their children...) with each node's state, a link
// to each job, and Retry on failed nodes. Live (refreshed every 2 s). Trees are shown up to MAX_NODES
// jobs, read breadth first.

import * as api from "../api.js";
import { h, link, replace } from "../dom.js";
import { canAdmin } from "../session.js";
import { actionButton, errorBox, stateBadge } from "../ui.js";

const MAX_NODES = 300;

export async function renderFlow(container, { queue, id }) {
  const head = h("div", { class: "job-header" });
  const body = h("div", { class: "panel", "data-testid": "flow-tree" });
  replace(container,
    h("p", { class: "crumbs" }, link("Overview", "overview"), " / ", link(queue, "queues", queue), " / ",
      link("job", "jobs", queue, id), " / flow"),
    head, body);
  let lastKey = null;

  async function refresh(force = false) {
    const root = await api.getJob(queue, id);
    const nodes = await readTree(root);
    const key = JSON.stringify(nodes.map((n) => [n.job.queue, n.job.id, n.job.state]));
    if (!force && key === lastKey) return;
    lastKey = key;
    const counts = {};
    for (const n of nodes) counts[n.job.state] = (counts[n.job.state] ?? 0) + 1;
    replace(head,
      h("h2", {}, "Flow of ", h("span", { class: "job-title" }, String(root.name ?? "")), " ", stateBadge(String(root.state))),
      h("p", { class: "muted", "data-testid": "flow-summary" },
        `${nodes.length} job(s): `, Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", "),
        nodes.length >= MAX_NODES ? ` (first ${MAX_NODES} shown)` : ""),
      root.parent ? h("p", {}, "Part of a larger flow: ",
        link("parent flow", "flows", root.parent.queue, root.parent.id)) : null,
    );
    const byParent = new Map();
    for (const n of nodes.slice(1)) {
      const k = `${n.parent.queue}:${n.parent.id}`;
      if (!byParent.has(k)) byParent.set(k, []);
      byParent.get(k).push(n);
    }
    const after = () => refresh(true);
    const item = (n) => {
      const kids = byParent.get(`${n.job.queue}:${n.job.id}`) ?? [];
      return h("li", { "data-testid": "flow-node", "data-state": n.job.state, "data-id": n.job.id },
        h("span", { class: "flow-node" },
          stateBadge(String(n.job.state)),
          link(String(n.job.name ?? n.job.id), "jobs", n.job.queue, n.job.id),
          h("span", { class: "queue" }, `${n.job.queue} · ${n.job.id}`),
          n.job.state === "failed" && canAdmin()
            ? actionButton("Retry", () => api.retryJob(n.job.queue, n.job.id), { after, testid: "flow-retry" }) : null,
        ),
        kids.length ? h("ul", {}, kids.map(item)) : null);
    };
    replace(body, h("ul", { class: "flow-tree" }, item(nodes[0])));
  }

  await refresh(true).catch((err) => replace(body, errorBox(err)));
  return { refresh: () => refresh().catch(() => {}) };
}

async function readTree(root) {
  const nodes = [{ job: root, parent: null }];
  let level = [root];
  while (level.length && nodes.length < MAX_NODES) {
    const next = [];
    for (const parent of level) {
      const room = MAX_NODES - nodes.length - next.length;
      const kids = (parent.children ?? []).slice(0, Math.max(0, room));
      const jobs = await Promise.all(kids.map((c) => api.getJob(c.queue, c.id)
        .catch(() => ({ queue: c.queue, id: c.id, name: c.name, state: "removed", children: [] }))));
      for (const job of jobs) next.push({ job, parent: { queue: parent.queue, id: parent.id } });
    }
    nodes.push(...next);
    level = next.map((n) => n.job);
  }
  return nodes;
}
