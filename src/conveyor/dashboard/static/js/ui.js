// Shared widgets: confirmation dialog, notices, action buttons, state badges.

import { h, replace } from "./dom.js";
import { canAdmin } from "./session.js";

let dialog = null;

/** Ask for confirmation in a modal <dialog>; resolves true only when the user confirms. */
export function confirmAction(title, message, confirmLabel = "Confirm") {
  if (!dialog) {
    dialog = h("dialog", { id: "confirm-dialog", class: "confirm" });
    document.body.appendChild(dialog);
  }
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.close();
      resolve(answer);
    };
    replace(
      dialog,
      h("form", { method: "dialog" },
        h("h3", {}, title),
        h("p", { class: "confirm-message" }, message),
        h("div", { class: "dialog-buttons" },
          h("button", { type: "button", class: "btn", "data-testid": "confirm-cancel", onclick: () => done(false) }, "Cancel"),
          h("button", {
            type: "button", class: "btn danger", "data-testid": "confirm-ok", onclick: () => done(true),
          }, confirmLabel),
        ),
      ),
    );
    dialog.addEventListener("cancel", () => resolve(false), { once: true });
    dialog.showModal();
  });
}

export function notify(message, kind = "info") {
  const area = document.getElementById("notices");
  if (!area) return;
  const note = h("div", { class: ["notice", kind], role: kind === "error" ? "alert" : "status" }, message);
  area.appendChild(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 3500);
}

/**
 * A button that runs an admin action. Returns null for keys without the admin scope, so read-only
 * sessions get no action controls at all. `confirm` (text) asks first; `after` runs on success.
 */
export function actionButton(label, run, { confirm = null, danger = false, after = null, testid = null } = {}) {
  if (!canAdmin()) return null;
  const btn = h("button", {
    type: "button", class: ["btn", "action", danger && "danger"], "data-action": label,
    "data-testid": testid ?? `action-${label.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`,
  }, label);
  btn.addEventListener("click", async () => {
    if (confirm && !(await confirmAction(`${label}?`, confirm, label))) return;
    btn.disabled = true;
    try {
      const result = await run();
      notify(`${label}: done${typeof result === "string" ? ` (${result})` : ""}`);
      if (after) await after();
    } catch (err) {
      notify(`${label} failed: ${err.message}`, "error");
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

export function stateBadge(state) {
  return h("span", { class: ["badge", `state-${String(state).replace(/[^a-z]/g, "")}`] }, String(state));
}

export function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" }, String(err?.message ?? err));
}
