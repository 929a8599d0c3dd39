// Small generic renderers shared by pages.

import { h } from "../dom.js";
import { jsonText } from "../format.js";

/** A titled key/value table for any JSON object (nested values pretty-printed as text). */
export function kvTable(title, obj, testid = null) {
  const rows = obj && typeof obj === "object" && !Array.isArray(obj)
    ? Object.entries(obj).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "object" && v !== null ? h("pre", {}, jsonText(v)) : String(v))))
    : [h("tr", {}, h("td", {}, h("pre", {}, jsonText(obj))))];
  return h("div", { class: "panel", "data-testid": testid }, h("h3", {}, title), h("table", { class: "kv" }, h("tbody", {}, rows)));
}

export function jsonBlock(value, testid) {
  return h("pre", { class: "json", "data-testid": testid }, jsonText(value));
}

/** A titled table for a list of objects (columns = union of their keys, values as text). */
export function listTable(title, items, testid = null) {
  const cols = [];
  for (const it of items) for (const k of Object.keys(it ?? {})) if (!cols.includes(k)) cols.push(k);
  const cell = (v) => (v !== null && typeof v === "object" ? jsonText(v) : v === undefined || v === null ? "" : String(v));
  return h("div", { class: "panel", "data-testid": testid }, h("h3", {}, title),
    h("table", { class: "kv" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
      h("tbody", {}, items.map((it) => h("tr", {}, cols.map((c) => h("td", {}, cell(it?.[c]))))))));
}

/** Whatever limits/group state the API reports, split into scalars and lists. */
export function limitsPanels(title, obj, testid) {
  if (Array.isArray(obj)) return obj.length ? listTable(title, obj, testid) : null;
  if (!obj || typeof obj !== "object") return obj === undefined || obj === null ? null : kvTable(title, obj, testid);
  const scalars = {};
  const lists = [];
  for (const [k, v] of Object.entries(obj)) {
    if (Array.isArray(v) && v.length && typeof v[0] === "object") lists.push(listTable(`${title}: ${k}`, v, `${testid}-${k}`));
    else scalars[k] = v;
  }
  return [Object.keys(scalars).length ? kvTable(title, scalars, testid) : null, ...lists];
}
