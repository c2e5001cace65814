"""The audit signing key file when several processes start at once (e.g. `serve --workers 2`)."""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path

from adapters.auditchain.checkpoints import Signer


def test_a_process_finding_the_key_file_just_created_waits_for_its_key(tmp_path: Path):
    path = tmp_path / "audit-signing.key"
    seed = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the first process, not yet written

    def write_late() -> None:
        time.sleep(0.1)
        with os.fdopen(fd, "w") as file:
            file.write(base64.b64encode(seed).decode() + "\n")

    writer = threading.Thread(target=write_late)
    writer.start()
    signer = Signer.from_file(path, "KEYLEDGER_AUDIT_SIGNING_KEY")
    writer.join()
    assert signer.public_key == Signer.from_seed(seed).public_key


def test_two_processes_starting_together_share_one_key(tmp_path: Path):
    path = tmp_path / "audit-signing.key"
    first = Signer.from_file(path, "KEYLEDGER_AUDIT_SIGNING_KEY")
    second = Signer.from_file(path, "KEYLEDGER_AUDIT_SIGNING_KEY")
    assert first.public_key == second.public_key
    assert path.stat().st_mode & 0o777 == 0o600
