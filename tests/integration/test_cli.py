"""The scripted path: mint a token with the management command, upload with the CLI."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import pytest
from django.core.management import call_command

from djust_resumable.conf import MiB
from djust_resumable.tokens import read_token
from tests.helpers import free_port, make_random_file, sha256_file

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
    # The ref is printed once the server answered ready, so a killed client can resume it.
    assert f"ref {ref.group(1)} (resume with --ref {ref.group(1)})" in proc.stderr
    rec = await ledger_reader().get(ref.group(1))
    assert object_sha256(s3_client, s3_bucket, rec.key)[0] == sha256_file(src)
    # Too big for the token: a typed refusal, exit code 2.
    small = mint(max_file_size="1M")
    proc = subprocess.run(
        [sys.executable, "-m", "djust_resumable", "upload", str(src), "--url", w.url,
         "--token", small, "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "too_large" in proc.stderr
    assert "resume" not in proc.stderr  # a new token is needed, not a resume


def cli(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "djust_resumable", "upload", *args, "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_bad_arguments_one_line(tmp_path):
    src = make_random_file(tmp_path / "a.bin", 1000)
    token = mint()
    line = one_line_error(cli(str(tmp_path / "missing.bin"), "--url",
                              "ws://127.0.0.1:9/ws/djust-resumable/", "--token", token)[0])
    assert "missing.bin" in line and "no such file" in line
    for url in ("http://127.0.0.1:8000/ws/djust-resumable/", "127.0.0.1:8000/ws/x/"):
        line = one_line_error(cli(str(src), "--url", url, "--token", token)[0])
        assert url in line and "ws://" in line


async def test_cli_ends_at_once_on_errors_retrying_cannot_fix(workers, tmp_path):
    (w,) = workers(1, TOKEN_MAX_AGE=2)
    src = make_random_file(tmp_path / "b.bin", 100_000)
    token = mint(max_file_size="1G")
    base = w.url.split("/ws/")[0]
    # A path typo (no route: the example answers HTTP 403) and a non-upload route (djust's
    # LiveView socket accepts, then answers "connect"): both before give_up_after (300 s).
    for url, code in ((w.url + "x", "rejected"), (base + "/ws/nope", "rejected"),
                      (base + "/ws/live/", "not_upload_endpoint")):
        proc, took = cli(str(src), "--url", url, "--token", token)
        assert proc.returncode == 2 and f"upload failed: {code}:" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "resume" not in proc.stderr
        assert took < 30
    assert "No route found" not in w.log_text()  # no server traceback per typo either
    # A garbage and an expired token: typed refusals the CLI cannot cure by retrying.
    time.sleep(2.5)
    for tok, code in (("garbage", "bad_token"), (token, "token_expired")):
        proc, took = cli(str(src), "--url", w.url, "--token", tok)
        assert proc.returncode == 2 and f"upload failed: {code}:" in proc.stderr, proc.stderr
        assert "mint a new token" in proc.stderr and "--ref" not in proc.stderr
        assert took < 30


def test_cli_reports_each_retry_reason_once(tmp_path):
    src = make_random_file(tmp_path / "c.bin", 1000)
    url = f"ws://127.0.0.1:{free_port()}/ws/djust-resumable/"  # nobody listens
    proc, took = cli(str(src), "--url", url, "--token", mint(), "--give-up-after", "3")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("connection refused, retrying in ") == 1, proc.stderr
    assert "upload failed: unreachable: gave up after 3 s" in proc.stderr
    assert "Traceback" not in proc.stderr and "--ref" not in proc.stderr  # no ref yet
