"""The scripted path: mint a token with the management command, upload with the CLI."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from django.core.management import call_command

from djust_resumable.conf import MiB
from djust_resumable.tokens import read_token
from tests.helpers import make_random_file, sha256_file

from .conftest import ROOT, object_sha256

pytestmark = pytest.mark.integration


def mint(**opts) -> str:
    out = io.StringIO()
    call_command("resumable_token", stdout=out, **opts)
    return out.getvalue().strip()


def test_token_command_grants_what_it_says():
    g = read_token(mint(slot="docs", max_file_size="3G", user="5"), 60)
    assert (g.slot, g.max_file_size, g.user) == ("docs", 3 * 1024**3, "5")
    assert g.session.startswith("cli-")
    assert read_token(mint(), 60).session != g.session  # a new owner per token


async def test_cli_upload(workers, tmp_path, s3_client, s3_bucket, ledger_reader):
    (w,) = workers(1)
    src = make_random_file(tmp_path / "cli.bin", 20 * MiB + 3)
    token = mint(max_file_size="1G")
    proc = subprocess.run(
        [sys.executable, "-m", "djust_resumable", "upload", str(src), "--url", w.url,
         "--token", token, "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ref = re.search(r"done ref=([0-9a-f]{32}) size=(\d+)", proc.stdout)
    assert ref and int(ref.group(2)) == src.stat().st_size
    rec = await ledger_reader().get(ref.group(1))
    assert object_sha256(s3_client, s3_bucket, rec.key)[0] == sha256_file(src)
    # Too big for the token: a typed refusal, exit code 2.
    small = mint(max_file_size="1M")
    proc = subprocess.run(
        [sys.executable, "-m", "djust_resumable", "upload", str(src), "--url", w.url,
         "--token", small, "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "too_large" in proc.stderr
