"""How uvicorn serves the gateway: one place for its options, the inbound limits among them."""
from __future__ import annotations

import functools
from typing import Any

from gateway.http_guard import GuardedHttpToolsProtocol
from gateway.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`.

    The protocol is uvicorn's httptools one with the gateway's bounds (`gateway.http_guard`); a
    partial of a module-level class, so that `--workers N` can hand it to its worker processes.
    No proxy-header rewriting (the gateway never reads the client address) and no Server header:
    both cost every request something for nothing."""
    server = settings.server
    return dict(host=settings.host, port=settings.port, loop="uvloop", lifespan="on",
                http=functools.partial(GuardedHttpToolsProtocol, limits=server),
                timeout_keep_alive=server.keep_alive_timeout, access_log=False, log_level="warning",
                timeout_graceful_shutdown=int(settings.shutdown_grace), proxy_headers=False, server_header=False)
