// A job's streamed output, followed live over its event stream: `output` events carry (attempt,
// byte offset, chunk); a new attempt starts the text again. A dropped connection resumes with the
// last event id, which tells the server what this page already has, so nothing repeats or is lost.

import { openJobEvents } from "./api.js";

const END = new Set(["completed", "failed", "cancelled", "removed"]);
const RETRY_MS = 2000;

export function followOutput(queue, id, onChange) {
  const controller = new AbortController();
  const state = { text: "", attempt: 0, truncated: false, done: false };
  let lastId = null;
  let stopped = false;

  function apply(data) {
    if (data.attempt !== state.attempt) {
      state.text = "";
      state.truncated = false;
      state.attempt = data.attempt;
    }
    if (data.truncated) state.truncated = true;
    if (typeof data.chunk === "string") state.text += data.chunk;
    onChange({ ...state });
  }

  function handle(block) {
    let event = "message";
    let eventId = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const name = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (name === "event") event = value;
      else if (name === "id") eventId = value;
      else if (name === "data") data.push(value);
    }
    if (eventId) lastId = eventId;
    if (!data.length) return;
    const parsed = JSON.parse(data.join("\n"));
    if (event === "output") apply(parsed);
    if (END.has(event) || (event === "state" && END.has(parsed.state))) {
      state.done = true;
      onChange({ ...state });
    }
  }

  async function run() {
    while (!stopped && !state.done) {
      try {
        const resp = await openJobEvents(queue, id, lastId, controller.signal);
        if (!resp.ok || !resp.body) {
          if (resp.status === 404 || resp.status === 401 || resp.status === 403) return;
          throw new Error(`HTTP ${resp.status}`);
        }
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            handle(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
        if (state.done) return;
      } catch (err) {
        if (stopped) return;
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }

  run();
  return () => {
    stopped = true;
    controller.abort();
  };
}

// Flashcards complete so far in a partial JSON answer ({"cards": [{"front": .., "back": ..}, ...).
const CARD = /\{\s*"front"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"back"\s*:\s*"((?:[^"\\]|\\.)*)"\s*\}/g;

export function partialCards(text) {
  const cards = [];
  for (const m of text.matchAll(CARD)) {
    try {
      cards.push({ front: JSON.parse(`"${m[1]}"`), back: JSON.parse(`"${m[2]}"`) });
    } catch {
      // an escape cut in half: the card is complete in a later chunk
    }
  }
  return cards;
}
