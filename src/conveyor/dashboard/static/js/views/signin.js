// Sign-in form: the key is checked against the API, then kept in sessionStorage (never in a URL);
// "remember me" lets new tabs of this browser get it from this one (keystore.js).

import { h, replace } from "../dom.js";

export function renderSignIn(container, onKey) {
  const input = h("input", {
    type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true,
    placeholder: "API key", "aria-label": "API key", maxlength: 512,
  });
  const message = h("p", { class: "signin-error", role: "alert" });
  const remember = h("input", { type: "checkbox", id: "remember", "data-testid": "remember" });
  const form = h("form", { class: "signin", "data-testid": "signin-form" },
    h("h2", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an API key. It stays in this tab only (session storage) and is sent as a Bearer header."),
    input,
    h("label", { class: "remember", for: "remember" }, remember,
      " Remember me in new tabs of this browser (until every dashboard tab is closed)"),
    h("button", { type: "submit", class: "btn primary" }, "Sign in"),
    message,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    replace(message);
    try {
      await onKey(key, remember.checked);
    } catch (err) {
      replace(message, err.status === 401 || err.status === 403 ? "That key was not accepted." : `Sign-in failed: ${err.message}`);
    }
  });
  replace(container, form);
  input.focus();
}
