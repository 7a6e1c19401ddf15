"""Fixtures and helpers of the avatar browser tests (imported by test_avatar.py; the shared
conftest.py re-exports the integration fixtures such as ``workers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
OUTPUT = ROOT / "test-output" / "browser"


def prepare(w: Any) -> Any:
    """Migrate the worker's database (sessions) and set ``.base``, its http URL."""
    subprocess.run([sys.executable, str(ROOT / "example" / "manage.py"), "migrate",
                    "--noinput", "-v", "0"], cwd=ROOT / "example", env=w.env, check=True,
                   timeout=120)
    w.base = f"http://127.0.0.1:{w.port}"
    return w


@pytest.fixture
def av_site(workers) -> Any:
    """One uvicorn worker of the example project with a migrated database."""
    (w,) = workers(1)
    return prepare(w)


@pytest.fixture(scope="module")
def av_browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium not installed: run `make setup` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def av_page(av_browser) -> Iterator[Any]:
    ctx = av_browser.new_context()
    pg = ctx.new_page()
    try:
        yield pg
    finally:
        ctx.close()


@pytest.fixture
def av_shots(request) -> Path:
    """Directory for this test's screenshots: test-output/browser/<test name>/."""
    d = OUTPUT / request.node.name
    d.mkdir(parents=True, exist_ok=True)
    return d
