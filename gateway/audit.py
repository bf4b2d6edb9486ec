"""The audit log: who did what to the gateway's teams, keys and configuration, when, from where.

Entries are appended to the store (every replica writes to and reads the same log) by the admin
API and the console's sign-in, and are never changed or deleted through any API; the store drops
them once they are older than `audit_retention_days`. An entry names its actor as `admin` or as a
team's key (`key:<key id>` with the team), never by a secret.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from gateway.exchange import Principal
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("gateway.audit")
MAX_ENTRIES = 1000
DEFAULT_ENTRIES = 100


def actor_of(principal: Principal | None) -> str:
    if principal is None:
        return "anonymous"
    return "admin" if principal.is_admin else f"key:{principal.key_id}"


def audit_entry(*, action: str, principal: Principal | None, address: str | None, target: str | None = None,
                via: str = "api", outcome: str = "ok", details: dict[str, Any] | None = None,
                now: float | None = None, actor: str | None = None) -> dict[str, Any]:
    """`actor` names who acted when no key did (`operator` for a SIGHUP)."""
    return {"ts": time.time() if now is None else now, "actor": actor or actor_of(principal),
            "actor_team": None if principal is None or principal.is_admin else principal.team,
            "action": action, "target": target, "address": address, "via": via, "outcome": outcome,
            "details": details or {}}


class Auditor:
    def __init__(self, store: Store, retention_days: int) -> None:
        self.store = store
        self.retention_s = retention_days * 86400.0

    async def record(self, **entry: Any) -> None:
        """Append one entry; a store that cannot take it is logged (the action itself is done)."""
        data = audit_entry(**entry)
        try:
            await self.store.append_audit(data, self.retention_s)
        except StoreUnavailable as exc:
            log.warning("audit entry not stored (%s): %s by %s on %s", exc, data["action"], data["actor"],
                        data["target"])

    async def entries(self, start: float, end: float, limit: int) -> list[dict[str, Any]]:
        return await self.store.audit_entries(start, end, limit)
