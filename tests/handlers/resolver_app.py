"""The app the resolver tests run with `conveyor worker` in a mount namespace whose /etc/resolv.conf
points at the test's DNS server: the webhook and document handlers, configured from the environment."""

from __future__ import annotations

import os

from conveyor import Conveyor
from conveyor.handlers import install

app = Conveyor(prefix=os.environ.get("CONVEYOR_PREFIX", "cv"), name="resolver-tests")
handlers = install(app, webhooks=True, documents=True)
