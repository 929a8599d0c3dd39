"""A local OpenAI-compatible chat server with a hidden capacity, for the adaptive-concurrency bench.

    python -m bench.llm_server PORT CAPACITY LATENCY_S

POST /v1/chat/completions answers after LATENCY_S with a completion and its usage while at most
CAPACITY requests are in flight; above that it answers 429 at once (no Retry-After, as many providers
do under load). GET /stats returns {"ok", "rate_limited", "peak"}. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, capacity: int, latency_s: float) -> None:
        self.capacity = capacity
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.inflight = self.ok = self.limited = self.peak = 0


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def _send(self, code: int, body: dict[str, object]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            with state.lock:
                self._send(200, {"ok": state.ok, "rate_limited": state.limited, "peak": state.peak})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0") or 0)
            self.rfile.read(min(length, 1_000_000))
            with state.lock:
                if state.inflight >= state.capacity:
                    state.limited += 1
                    over = True
                else:
                    state.inflight += 1
                    state.peak = max(state.peak, state.inflight)
                    over = False
            if over:
                self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}})
                return
            try:
                time.sleep(state.latency_s)
            finally:
                with state.lock:
                    state.inflight -= 1
                    state.ok += 1
            self._send(200, {
                "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "bench",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160},
            })

    return Handler


def main() -> None:
    port, capacity, latency = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(State(capacity, latency)))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
