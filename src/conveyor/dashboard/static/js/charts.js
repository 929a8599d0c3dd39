// Small inline SVG charts, drawn with DOM calls (no library, no inline markup).

import { s } from "./dom.js";

/** Bars of per-minute counts, oldest first. `fail` (same length) is stacked on top in red. */
export function barChart(ok, fail, { width = 180, height = 36, label = "" } = {}) {
  const n = Math.max(ok.length, 1);
  const totals = ok.map((v, i) => v + (fail[i] || 0));
  const max = Math.max(1, ...totals);
  const bw = width / n;
  const svg = s("svg", {
    class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
  });
  svg.appendChild(s("title", {}, label));
  svg.appendChild(s("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }));
  ok.forEach((v, i) => {
    const f = fail[i] || 0;
    const hOk = (v / max) * (height - 2);
    const hFail = (f / max) * (height - 2);
    const x = i * bw + 0.5;
    const w = Math.max(1, bw - 1);
    if (hOk > 0) svg.appendChild(s("rect", { x, y: height - 1 - hOk, width: w, height: hOk, class: "bar-ok" }));
    if (hFail > 0) {
      svg.appendChild(s("rect", { x, y: height - 1 - hOk - hFail, width: w, height: hFail, class: "bar-fail" }));
    }
  });
  return svg;
}

/** A line of fractions (0..1, null = no data), oldest first. */
export function rateChart(values, { width = 120, height = 36, label = "" } = {}) {
  const n = Math.max(values.length - 1, 1);
  const svg = s("svg", {
    class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
  });
  svg.appendChild(s("title", {}, label));
  svg.appendChild(s("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }));
  const pts = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const x = 2 + (i / n) * (width - 4);
    const y = height - 3 - v * (height - 5);
    pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  });
  if (pts.length > 1) svg.appendChild(s("polyline", { points: pts.join(" "), class: "rate-line" }));
  for (const p of pts) {
    const [cx, cy] = p.split(",");
    svg.appendChild(s("circle", { cx, cy, r: 1.8, class: "rate-dot" }));
  }
  return svg;
}
