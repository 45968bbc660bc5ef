"""The bundled ``nats-server`` runner, for tests: it lives in :mod:`handler_base.messaging.server`.

Kept so that tests and benchmarks import it from the testing helpers as before; product
code (``aictl up``) imports :mod:`handler_base.messaging.server` itself.
"""

from handler_base.messaging.server import (
    READY_LINE,
    NatsServer,
    NatsServerError,
    find_nats_server,
    free_port,
)

__all__ = ["READY_LINE", "NatsServer", "NatsServerError", "find_nats_server", "free_port"]
