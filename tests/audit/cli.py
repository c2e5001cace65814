"""Running `keyledger audit ...` as a user does: a subprocess on the test's store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from keyledger.settings import Settings

KEYLEDGER = str(Path(sys.executable).parent / "keyledger")


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env["KEYLEDGER_DATABASE_URL"] = settings.database_url
    if settings.database_schema:
        env["KEYLEDGER_DATABASE_SCHEMA"] = settings.database_schema
    if settings.audit_key:
        env["KEYLEDGER_AUDIT_KEY"] = settings.audit_key.get_secret_value()
    if settings.audit_signing_key:
        env["KEYLEDGER_AUDIT_SIGNING_KEY"] = settings.audit_signing_key.get_secret_value()
    return env


def run(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEYLEDGER, "audit", *args],
        capture_output=True,
        text=True,
        env=env_of(settings) if env is None else env,
        timeout=60,
        check=False,
    )
