"""`keyledger insights WS [--days N] [--json]`: a workspace's least-privilege findings (SPEC 8.2).

Read from the store's read models (caught up first), with the rules the API uses (`api.insights`).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any
from uuid import UUID

import typer

from api.insights import workspace_findings
from domain.errors import InvalidInput
from domain.insights import DEFAULT_DAYS, Finding
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from scripts.cli_output import emit


def insights(
    workspace: str,
    days: Annotated[int, typer.Option(help="the window, in days back from now (1-365)")] = DEFAULT_DAYS,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON answer instead of lines")] = False,
) -> None:
    """Print the workspace's findings: unused keys and scopes, denied scopes, rotation due, expiring soon."""
    try:
        workspace_id = UUID(workspace)
    except ValueError:
        raise InvalidInput(f"workspace {workspace!r} is not a UUID") from None
    settings = Settings()
    ledger = open_ledger(settings)
    models = ReadModels(settings, ledger)
    try:
        ledger.get_workspace(workspace_id)  # an unknown workspace is bad input, not an empty report
        models.catch_up()
        now = ledger.clock()
        found = workspace_findings(models, workspace_id, now, days)
    finally:
        models.close()
        ledger.close()
    if as_json:
        emit({"window_days": days, "generated_at": now, "findings": [dataclasses.asdict(f) for f in found]})
        return
    typer.echo(f"{len(found)} finding{'s' if len(found) != 1 else ''} over the last {days} days")
    for finding in found:
        typer.echo(_line(finding))


def _line(finding: Finding) -> str:
    head = f"{finding.kind:<14} {finding.key_name} ({finding.key_id}) observed {finding.observed_days}d"
    return f"{head}: {_describe(finding)}"


def _describe(finding: Finding) -> str:
    detail: dict[str, Any] = finding.detail
    if finding.kind == "unused_scope":
        keep = (finding.suggestion or {}).get("scopes", [])
        return f"unused {', '.join(detail['unused'])}; keep {', '.join(keep) or 'nothing'}"
    if finding.kind == "denied_scope":
        return "; ".join(f"{d['scope']} refused {d['count']}x, last {d['last_seen']}" for d in detail["scopes"])
    if finding.kind == "unused_key":
        return f"no answers (last: {detail['last_answer'] or 'never'}); consider revoking"
    if finding.kind == "rotation_due":
        return f"secret is {detail['secret_age_days']} days old; rotate it"
    return f"expires {detail['expires_at']}"
