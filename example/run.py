"""`make run`: a local Redis, a local S3 API server and 2 ASGI workers, in the foreground.

    .venv/bin/python example/run.py

Starts (only what the environment does not already provide):

* Redis: the system ``redis-server`` (AOF in ``.run/redis``), or an in-process fakeredis TCP
  server when no binary exists. ``DJR_REDIS_URL`` set -> that Redis is used, nothing started.
* S3: ``moto_server`` with the bucket ``djust-resumable``. ``AWS_S3_ENDPOINT_URL``,
  ``AWS_STORAGE_BUCKET_NAME`` or ``AWS_ACCESS_KEY_ID`` set -> that S3 is used, nothing started.
* the example project under uvicorn (2 workers) on port 8000 (or a free one; ``DJR_PORT``).

then mints an upload token and prints the URL and a ready-to-paste upload command. Ctrl-C or
SIGTERM stops everything it started. Only the stdlib and packages of the venv are used.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
RUN_DIR = ROOT / ".run"  # git-ignored: Redis AOF, sqlite db, server logs
VENV_BIN = Path(sys.executable).parent  # `make run` runs the venv's python
BUCKET = "djust-resumable"
ENDPOINT_PATH = "/ws/djust-resumable/"
MOTO_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM/SIGHUP: unwinds to the clean-up."""


def say(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def rel(path: Path) -> str:
    """Paths relative to the repo read better in the printed commands (make runs from it)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- ports


def port_free(port: int) -> bool:
    # Bind instead of connect: a port can be taken on 127.0.0.1 without anything answering.
    # SO_REUSEADDR as the servers set it: TIME_WAIT leftovers of a previous run (which they
    # ignore) must not make us move off 6379/9000/8000; a listener still makes bind fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    """The conventional port when free (so URLs stay the same between runs), else any."""
    if port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, ready: Callable[[], bool], alive: Callable[[], bool],
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive():
            raise RuntimeError(f"{what} exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.1)


# --------------------------------------------------------------------------- children


def _child_setup() -> None:
    """Runs in each child between fork and exec.

    A new session/process group lets us stop a child *and its own children* (uvicorn's
    workers) with one killpg, and keeps a terminal's Ctrl-C from reaching them before we
    decide the shutdown order. PR_SET_PDEATHSIG makes the kernel SIGTERM the child if this
    script dies without cleaning up (SIGKILL, crash), so nothing is orphaned.
    """
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort only
            pass
    # Signals ignored by our parent (e.g. SIGINT for `make run &`) stay ignored across exec.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def token_lifetime(env: dict[str, str]) -> str:
    """How long the printed token is valid: TOKEN_MAX_AGE from DJR_SETTINGS_JSON (which the
    example's settings apply) or the default, in words."""
    import json

    from djust_resumable.conf import DEFAULTS

    try:
        extra = json.loads(env.get("DJR_SETTINGS_JSON") or "{}")
        seconds = int(extra.get("TOKEN_MAX_AGE", DEFAULTS["TOKEN_MAX_AGE"]))
    except (ValueError, TypeError, AttributeError):
        seconds = int(DEFAULTS["TOKEN_MAX_AGE"])
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group (clean shutdown), SIGKILL it after ``timeout``."""
        if self.proc.poll() is not None:
            self._reap_group()
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop in {timeout:.0f}s: SIGKILL")
            self.proc.kill()
            self.proc.wait()
        self._reap_group(timeout)

    def _reap_group(self, timeout: float = 5.0) -> None:
        # The leader may exit before its children (uvicorn workers): wait for the group to
        # empty, then SIGKILL whatever is left.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Stack:
    """Everything started, in start order; ``stop_all`` stops them in reverse."""

    children: list[Child] = field(default_factory=list)
    threads: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str],
              log: Path | None = None) -> Child:
        out: Any = None  # inherit our stdout: uvicorn's log is worth seeing
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT if out else None,
                                    preexec_fn=_child_setup)  # noqa: PLW1509
        finally:
            if out is not None:
                out.close()
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        # Reverse order: the app first (it talks to Redis and S3 while closing), Redis last
        # so its AOF gets the final writes.
        for child in reversed(self.children):
            if child.alive():
                say(f"stopping {child.name} (pid {child.proc.pid})")
            child.stop()
        for name, stop in reversed(self.threads):
            say(f"stopping {name}")
            stop()


# --------------------------------------------------------------------------- Redis


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")  # RESP array: fakeredis has no inline commands
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(stack: Stack) -> tuple[str, str]:
    """-> (redis URL, description). Real redis-server if installed, else fakeredis."""
    port = pick_port(6379)
    binary = shutil.which("redis-server")
    if binary:
        data = RUN_DIR / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # No RDB snapshots; AOF with fsync every second: the ledger survives a restart of
        # `make run` without making every write wait for the disk.
        child = stack.spawn("redis-server", [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data),
            "--daemonize", "no"], env=dict(os.environ), log=RUN_DIR / "redis.log")
        wait_until("redis-server", lambda: redis_ping("127.0.0.1", port), child.alive)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True
                                 ).stdout.split(" v=")[-1].split()[0]
        return (f"redis://127.0.0.1:{port}/0",
                f"redis-server {version} (pid {child.proc.pid}), AOF in {rel(data)}, "
                f"log {rel(RUN_DIR / 'redis.log')}")

    # No binary (`make setup` installs it; a bare `python example/run.py` may not have it):
    # fakeredis speaks the protocol over TCP, so both worker processes share it. With lupa
    # installed it runs the ledger's Lua scripts. Data lives in this process's memory only.
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    stack.threads.append(("fakeredis", stop))
    wait_until("fakeredis", lambda: redis_ping("127.0.0.1", port), thread.is_alive)
    try:
        import lupa  # noqa: F401

        lua = "with Lua (lupa)"
    except ImportError:
        lua = "WITHOUT Lua: install lupa, the ledger needs EVAL"
    return (f"redis://127.0.0.1:{port}/0",
            f"fakeredis TCP server in this process ({lua}); no redis-server binary found, "
            "data is lost on exit")


def check_external_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"DJR_REDIS_URL={redact(url)} does not answer: {exc}") from exc


def redact(url: str) -> str:
    """URL without its password, for printing."""
    p = urllib.parse.urlsplit(url)
    if p.password:
        netloc = f"{p.username or ''}:***@{p.hostname}" + (f":{p.port}" if p.port else "")
        return urllib.parse.urlunsplit(p._replace(netloc=netloc))
    return url


# --------------------------------------------------------------------------- S3


def s3_client(endpoint: str, env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=env.get("AWS_S3_REGION_NAME", "us-east-1"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        config=Config(s3={"addressing_style": env.get("AWS_S3_ADDRESSING_STYLE", "path")},
                      retries={"mode": "standard", "max_attempts": 3}))


def http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means it serves
    except OSError:
        return False


def start_moto(stack: Stack, env: dict[str, str]) -> tuple[str, str]:
    """-> (endpoint URL, description). moto_server with the bucket created."""
    port = pick_port(9000)
    exe = VENV_BIN / "moto_server"
    args = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    # moto's access log has a line per part request: keep it in a file, not on the console.
    child = stack.spawn("moto_server", [*args, "-H", "127.0.0.1", "-p", str(port)],
                        env={**env, "PYTHONUNBUFFERED": "1"}, log=RUN_DIR / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    wait_until("moto_server", lambda: http_answers(endpoint + "/"), child.alive)
    s3_client(endpoint, env).create_bucket(Bucket=env["AWS_STORAGE_BUCKET_NAME"])
    return endpoint, (f"moto_server (pid {child.proc.pid}), in memory: objects vanish when "
                      f"this stops; log {rel(RUN_DIR / 'moto.log')}")


def check_external_s3(endpoint: str, env: dict[str, str]) -> None:
    # Warn only: credentials allowed to upload may still lack s3:ListBucket (HeadBucket).
    try:
        s3_client(endpoint, env).head_bucket(Bucket=env["AWS_STORAGE_BUCKET_NAME"])
    except Exception as exc:  # noqa: BLE001
        say(f"WARNING: HeadBucket {env['AWS_STORAGE_BUCKET_NAME']} on {endpoint} failed: "
            f"{exc}")


# --------------------------------------------------------------------------- the app


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``example/manage.py`` with the app's environment; its stdout, or exit on error."""
    done = subprocess.run([sys.executable, str(EXAMPLE / "manage.py"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise RuntimeError(f"manage.py {args[0]} failed (exit {done.returncode})")
    return done.stdout


def start_app(stack: Stack, env: dict[str, str], port: int) -> Child:
    child = stack.spawn("uvicorn", [
        sys.executable, "-m", "uvicorn", "project.asgi:application", "--app-dir", "example",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--ws", "websockets-sansio",
        # No per-message deflate: uploads are mostly incompressible and it costs CPU.
        "--ws-per-message-deflate", "false", "--ws-max-size", str(32 * 1024 * 1024)],
        env=env)
    # The supervisor binds the port before its workers import Django: wait for a real HTTP
    # answer (served by a worker), not just an open port.
    wait_until("uvicorn", lambda: http_answers(f"http://127.0.0.1:{port}/admin/login/"),
               child.alive, timeout=60)
    return child


def list_command(endpoint: str, bucket: str, embedded_s3: bool) -> str:
    """A one-liner listing the uploaded objects with their sizes."""
    keys = ('aws_access_key_id="testing", aws_secret_access_key="testing", '
            if embedded_s3 else "")  # otherwise boto3 reads the user's own AWS_* variables
    # Double quotes inside, so shlex.quote wraps it in plain single quotes.
    code = (f'import boto3; s3 = boto3.client("s3", endpoint_url="{endpoint}", {keys}'
            f'region_name="us-east-1"); [print(o["Size"], o["Key"]) for p in '
            f's3.get_paginator("list_objects_v2").paginate(Bucket="{bucket}", '
            f'Prefix="resumable/") for o in p.get("Contents", [])]')
    return f"{rel(VENV_BIN / 'python')} -c {shlex.quote(code)}"


def lock_run_dir() -> Any:
    """One `make run` per checkout: a second redis-server appending to the same AOF in
    .run/redis would corrupt it. The lock dies with this process, however it ends."""
    RUN_DIR.mkdir(exist_ok=True)
    f = open(RUN_DIR / "run.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        raise RuntimeError(f"another `make run` (pid {f.read().strip() or '?'}) is using "
                           f"{rel(RUN_DIR)}; stop it first") from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


# --------------------------------------------------------------------------- main


def main() -> int:
    def on_signal(signum: int, _frame: Any) -> None:
        # Further signals during the clean-up are ignored: it escalates to SIGKILL itself.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        raise Stop(signal.Signals(signum).name)

    # Set explicitly: `make run &` from a script starts us with SIGINT ignored.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    user = os.environ
    env: dict[str, str] = {**user, "DJANGO_SETTINGS_MODULE": "project.settings",
                           "PYTHONUNBUFFERED": "1"}
    # The sqlite db (admin users) goes to .run/ (git-ignored) unless the user chose a path.
    env.setdefault("DJR_DB_PATH", str(RUN_DIR / "db.sqlite3"))
    # Any S3 variable the user set means "my own S3": then moto is not started.
    embedded_s3 = not any(user.get(k) for k in ("AWS_S3_ENDPOINT_URL",
                                                "AWS_STORAGE_BUCKET_NAME",
                                                "AWS_ACCESS_KEY_ID"))
    env.setdefault("AWS_STORAGE_BUCKET_NAME", BUCKET)
    if embedded_s3:
        env.update(MOTO_KEYS)
    elif not user.get("AWS_S3_ENDPOINT_URL"):
        # The example settings default the endpoint to a local one; real AWS needs it set.
        region = user.get("AWS_S3_REGION_NAME", "us-east-1")
        env["AWS_S3_ENDPOINT_URL"] = f"https://s3.{region}.amazonaws.com"

    port_env = user.get("DJR_PORT")
    app_port = int(port_env) if port_env else pick_port(8000)
    if port_env and not port_free(app_port):
        say(f"DJR_PORT={app_port} is in use")
        return 1

    lock: Any = None  # kept open (locked) while we run
    if not user.get("DJR_REDIS_URL"):  # only the embedded Redis writes to .run/redis
        try:
            lock = lock_run_dir()
        except RuntimeError as exc:
            say(str(exc))
            return 1
    RUN_DIR.mkdir(exist_ok=True)
    stack = Stack()
    code = 0
    try:
        if user.get("DJR_REDIS_URL"):
            redis_url, redis_desc = user["DJR_REDIS_URL"], "external (DJR_REDIS_URL)"
            check_external_redis(redis_url)
        else:
            redis_url, redis_desc = start_redis(stack)
        env["DJR_REDIS_URL"] = redis_url
        say(f"Redis: {redact(redis_url)}  {redis_desc}")

        if embedded_s3:
            endpoint, s3_desc = start_moto(stack, env)
            env["AWS_S3_ENDPOINT_URL"] = endpoint
        else:
            endpoint, s3_desc = env["AWS_S3_ENDPOINT_URL"], "external (AWS_* variables)"
            check_external_s3(endpoint, env)
        bucket = env["AWS_STORAGE_BUCKET_NAME"]
        say(f"S3:    {endpoint} bucket {bucket}  {s3_desc}")

        manage(env, "migrate", "--noinput")
        say(f"database: {env['DJR_DB_PATH']} (migrated)")

        app = start_app(stack, env, app_port)
        # Minted after the app is up, with the same env, so it is signed with the same
        # SECRET_KEY the workers verify with.
        token = manage(env, "resumable_token", "--slot", "files",
                       "--max-file-size", "50G").strip()

        base, ws = f"http://127.0.0.1:{app_port}/", f"ws://127.0.0.1:{app_port}{ENDPOINT_PATH}"
        py = rel(VENV_BIN / "python")
        db_env = f"DJR_DB_PATH={shlex.quote(env['DJR_DB_PATH'])}"
        lines = [
            "",
            "=" * 78,
            f"  app        {base}   (admin: {base}admin/)",
            f"  WebSocket  {ws}",
            f"  Redis      {redact(redis_url)}  -- {redis_desc}",
            f"  S3         {endpoint}  bucket {bucket}  -- {s3_desc}",
            "",
            f"  Upload a file (token valid {token_lifetime(env)}, files up to 50 GiB):",
            "",
            f"    {py} -m djust_resumable upload FILE --url {ws} --token {shlex.quote(token)}",
            "",
            "  Interrupted? Re-run the same command with --ref REF (the client prints it).",
            "",
            "  List the stored objects (size, key):",
            "",
            f"    {list_command(endpoint, bucket, embedded_s3)}",
            "",
            f"  Admin user: {db_env} {py} example/manage.py createsuperuser",
            "",
            f"  Ctrl-C stops everything started here (uvicorn pid {app.proc.pid}).",
            "=" * 78,
            "",
        ]
        print("\n".join(lines), flush=True)

        # Foreground: stop everything if a child dies on its own.
        while True:
            for child in stack.children:
                if not child.alive():
                    log = f"; see {rel(child.log)}" if child.log else ""
                    say(f"{child.name} exited with {child.proc.returncode}{log}")
                    code = 1
                    raise Stop("child exited")
            time.sleep(0.5)
    except Stop as exc:
        if str(exc) != "child exited":
            say(f"{exc}: shutting down")
    except Exception as exc:  # noqa: BLE001 - report, then clean up what was started
        say(f"error: {exc}")
        code = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        stack.stop_all()
        say("stopped")
        if lock is not None:
            lock.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
