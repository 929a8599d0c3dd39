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

