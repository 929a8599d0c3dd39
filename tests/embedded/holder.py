"""A separate Conveyor process for the embedded tests: acquire the shared server, report, hold it.

Prints one JSON line {"url", "pid", "started"} once it holds a lease; on a line "release" on stdin it
releases and prints {"stopped": bool}, then exits. Run as a script: `python holder.py`.
"""

from __future__ import annotations

import json
import sys

from conveyor.embedded import resolve_redis_url
from conveyor.settings import Settings


def main() -> None:
    url, handle = resolve_redis_url(Settings.from_env())
    assert handle is not None
    print(json.dumps({"url": url, "pid": handle.pid, "started": handle.started}), flush=True)
    for line in sys.stdin:
        if line.strip() == "release":
            break
    print(json.dumps({"stopped": handle.release()}), flush=True)


if __name__ == "__main__":
    main()
