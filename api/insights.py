"""A workspace's findings (SPEC 8.2) from the read models: shared by the API and the CLI."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from domain.insights import Finding, KeyFacts, check_days, findings
from projections import ReadModels


def workspace_findings(models: ReadModels, ws: UUID, now: datetime, days: int) -> list[Finding]:
    check_days(days)
    granted = models.grant_times(ws)
    facts = [
        KeyFacts(
            key_id=k.id,
            name=k.name,
            status=k.status,
            created_at=k.created_at,
            scopes=k.scopes,
            granted_at=granted.get(k.id, {}),
            expires_at=k.expires_at,
            rotation_due=k.rotation_due,
            secret_since=k.rotated_at or k.created_at,
        )
        for k in models.list_keys(ws, now)
    ]
    use = models.key_use([k.key_id for k in facts if k.status != "revoked"], (now - timedelta(days=days)).date())
    return findings(facts, use, now, days, models.catalog.resources)
