"""Fixtures shared by every package's tests: real local servers, started on demand."""

import os

# Ray on these machines: single-machine mode, loopback only, no usage reporting
# (see ARCHITECTURE.md, "Rules of these machines").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytest_plugins: list[str] = [
    "handler_base.testing.ray_fixtures",
    "chat_handler.testing",
    "handler_base.testing.nats_fixtures",
]
