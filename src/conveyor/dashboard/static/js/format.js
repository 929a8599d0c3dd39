// Formatting of numbers, times and JSON for display (always as plain text).

export const STATES = ["waiting", "delayed", "active", "completed", "failed", "cancelled", "waiting-children"];

export function ageText(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  const s = Math.max(0, ms) / 1000;
  if (s < 1) return `${Math.round(ms)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function timeText(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(Number(ms));
  if (Number.isNaN(d.getTime())) return "—";
  return d.toISOString().replace("T", " ").replace("Z", " UTC");
}

export function jsonText(value) {
  if (value === undefined) return "—";
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function percentText(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)} %`;
}

/** Progress as a fraction 0..1 when the job reports a number (0-100) or {percent|pct|done/total}. */
export function progressFraction(p) {
  if (typeof p === "number") return Math.min(1, Math.max(0, p > 1 ? p / 100 : p));
  if (p && typeof p === "object") {
    const pct = p.percent ?? p.pct;
    if (typeof pct === "number") return Math.min(1, Math.max(0, pct / 100));
    if (typeof p.done === "number" && typeof p.total === "number" && p.total > 0) {
      return Math.min(1, Math.max(0, p.done / p.total));
    }
  }
  return null;
}
