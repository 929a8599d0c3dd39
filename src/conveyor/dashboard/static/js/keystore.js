// Where the API key lives in the browser. Always in this tab's sessionStorage (gone when the tab
// closes; never in a URL, a cookie or localStorage). With "remember me" the tab also hands the key to
// new dashboard tabs of the same browser that ask for it over a BroadcastChannel (same origin only),
// so the key lasts as long as one such tab is open; signing out in any of them signs them all out.

const KEY_NAME = "conveyor.dashboard.key";
const REMEMBER_NAME = "conveyor.dashboard.remember";
const ASK_TIMEOUT_MS = 400;
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("conveyor-dashboard") : null;
const me = Math.random().toString(36).slice(2);
let onRemoteSignOut = () => {};

export function getKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function remembered() {
  return sessionStorage.getItem(REMEMBER_NAME) === "1";
}

export function setKey(key, remember = false) {
  sessionStorage.setItem(KEY_NAME, key);
  if (remember) sessionStorage.setItem(REMEMBER_NAME, "1");
  else sessionStorage.removeItem(REMEMBER_NAME);
}

/** Forget the key here; with `everywhere`, remembered sessions in other tabs forget it too. */
export function clearKey(everywhere = false) {
  const shared = remembered();
  sessionStorage.removeItem(KEY_NAME);
  sessionStorage.removeItem(REMEMBER_NAME);
  if (everywhere && shared && channel) channel.postMessage({ type: "sign-out" });
}

export function setRemoteSignOutHandler(fn) {
  onRemoteSignOut = fn;
}

/** Ask the other tabs for a remembered key; resolves null when none answers in time. */
export function askOtherTabs() {
  if (!channel) return Promise.resolve(null);
  return new Promise((resolve) => {
    const done = (key) => {
      channel.removeEventListener("message", listen);
      clearTimeout(timer);
      resolve(key);
    };
    const listen = (ev) => {
      const m = ev.data;
      if (m && m.type === "key" && m.to === me && typeof m.key === "string") done(m.key);
    };
    const timer = setTimeout(() => done(null), ASK_TIMEOUT_MS);
    channel.addEventListener("message", listen);
    channel.postMessage({ type: "ask", from: me });
  });
}

if (channel) {
  channel.addEventListener("message", (ev) => {
    const m = ev.data;
    if (!m || typeof m !== "object") return;
    if (m.type === "ask" && typeof m.from === "string" && remembered() && getKey()) {
      channel.postMessage({ type: "key", to: m.from, key: getKey() });
    } else if (m.type === "sign-out" && remembered()) {
      sessionStorage.removeItem(KEY_NAME);
      sessionStorage.removeItem(REMEMBER_NAME);
      onRemoteSignOut();
    }
  });
}
