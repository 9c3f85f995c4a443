"""A real Label Studio server for tests: installed in its own venv, started, always stopped.

* :func:`ensure_venv` runs ``scripts/setup_labelstudio.sh`` (idempotent) and **fails the test
  loudly** when the server cannot be installed: these tests never skip.
* :func:`label_studio` (a context manager) starts ``label-studio start`` on 127.0.0.1 on a
  free port, telemetry and update checks off, legacy token auth on, local-files serving on
  with the given document root, on a copy of a cached *template* data dir (the first start
  on a fresh data dir runs ~1 minute of migrations; a copy starts in ~7-10 s). The template
  (``.venv-labelstudio/cache/template/``) is made once per venv install, with a random admin
  token and Django secret key kept beside it. The server runs in its own process group; on
  exit the whole group is terminated (then killed), whatever happened, and it also dies with
  the test process (``PR_SET_PDEATHSIG``) or at interpreter exit.
* :class:`LabelStudioServer` holds the URL and admin token and makes annotators: a second
  user joins through the organization's invite link (the real sign-up form) and reads their
  own token, exactly as a person would.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = Path(os.environ.get("LS_VENV", ROOT / ".venv-labelstudio"))
CACHE = LS_VENV / "cache"
ADMIN = "admin@example.com"
START_TIMEOUT_S = 240  # a first start (template creation) runs all migrations


def ensure_venv() -> Path:
    """``.venv-labelstudio/bin/label-studio``, installing it once; fails the test if it can't."""
    exe = LS_VENV / "bin" / "label-studio"
    setup = subprocess.run(
        [str(ROOT / "scripts" / "setup_labelstudio.sh")],
        env={**os.environ, "LS_VENV": str(LS_VENV)}, capture_output=True, text=True,
        timeout=1800,
    )  # fmt: skip
    if setup.returncode != 0 or not exe.exists():
        pytest.fail(
            "the Label Studio server could not be installed into "
            f"{LS_VENV} (scripts/setup_labelstudio.sh):\n{setup.stdout}\n{setup.stderr}",
            pytrace=False,
        )
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


try:  # loaded here: the child between fork and exec must not load libraries
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the server dies with the tests


@dataclass
class LabelStudioServer:
    """A running server: its URL, the admin's legacy token, data dir and document root."""

    url: str
    token: str
    data_dir: Path
    document_root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, method: str, path: str, body: object = None, token: str | None = None) -> object:
        """A JSON call with the admin's (or ``token``'s) legacy token."""
        req = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Token {token or self.token}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        with _OPENER.open(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def add_annotator(self, email: str, password: str) -> str:
        """Sign ``email`` up through the invite link; return their own legacy API token."""
        invite = self.api("GET", "/api/invite")
        assert isinstance(invite, dict)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar)
        )
        signup = f"{self.url}/user/signup/?token={urllib.parse.quote(invite['token'])}"
        opener.open(signup, timeout=60).read()
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        form = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf, "email": email,
                                       "password": password}).encode()  # fmt: skip
        req = urllib.request.Request(signup, data=form, headers={"Referer": signup})
        opener.open(req, timeout=60).read()
        with opener.open(f"{self.url}/api/current-user/token", timeout=60) as resp:
            return str(json.loads(resp.read())["token"])

    def personal_access_token(self) -> str:
        """A new personal access token (JWT refresh token) of the admin."""
        answer = self.api("POST", "/api/token/")
        assert isinstance(answer, dict)
        return str(answer["token"])

    def healthy(self) -> bool:
        try:
            with _OPENER.open(self.url + "/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after 15 s)."""
        _stop(self.proc)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _env(secrets_: dict[str, str], document_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABEL_STUDIO_", "DJANGO_", "VIRTUAL_ENV"))}  # fmt: skip
    env.update({
        "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false", "DEBUG": "false", "LOG_LEVEL": "WARNING",
        "SECRET_KEY": secrets_["secret_key"],
        "LABEL_STUDIO_USERNAME": ADMIN, "LABEL_STUDIO_PASSWORD": secrets_["password"],
        "LABEL_STUDIO_USER_TOKEN": secrets_["token"],
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })  # fmt: skip
    return env


def _start(exe: Path, data_dir: Path, document_root: Path, secrets_: dict[str, str],
           log: Path) -> LabelStudioServer:  # fmt: skip
    port = free_port()  # label-studio silently moves to port+1 when busy: we check the URL
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--enable-legacy-api-token"]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, env=_env(secrets_, document_root), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    atexit.register(_stop, proc)
    return LabelStudioServer(f"http://127.0.0.1:{port}", secrets_["token"], data_dir,
                             document_root, proc, log)  # fmt: skip


def wait_healthy(server: LabelStudioServer, timeout: float = START_TIMEOUT_S) -> float:
    """Seconds until ``/health`` answered; fails the test if the server died or never did."""
    t0 = time.monotonic()
    while not server.healthy():
        if server.proc.poll() is not None or time.monotonic() - t0 > timeout:
            server.stop()
            tail = server.log.read_text(errors="replace")[-4000:]
            pytest.fail(f"Label Studio did not start ({server.url}):\n{tail}", pytrace=False)
        time.sleep(0.25)
    return time.monotonic() - t0


def _template(exe: Path) -> tuple[Path, dict[str, str]]:
    """The cached template data dir and its secrets, made on first use (under a lock)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    done = CACHE / "template"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done / "secrets.json").exists():
            work = CACHE / f"making-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            (work / "root").mkdir(parents=True)
            made = {"token": secrets.token_hex(20), "password": secrets.token_urlsafe(16),
                    "secret_key": secrets.token_urlsafe(40)}  # fmt: skip
            server = _start(exe, work / "data", work / "root", made, work / "server.log")
            try:
                first = wait_healthy(server)
            finally:
                server.stop()
            (work / "first_start_s.txt").write_text(f"{first:.1f}\n")
            (work / "secrets.json").write_text(json.dumps(made))
            shutil.rmtree(done, ignore_errors=True)
            work.rename(done)
    return done / "data", json.loads((done / "secrets.json").read_text())


@contextlib.contextmanager
def label_studio(document_root: Path, workdir: Path, *, wait: bool = True
                 ) -> Iterator[LabelStudioServer]:  # fmt: skip
    """A started server on a fresh copy of the template; stopped on exit, always.

    ``document_root`` is ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` (it must contain the
    run directory whose media are served); ``workdir`` receives the data dir and log. With
    ``wait=False`` it returns at once (do other work, then call :func:`wait_healthy`).
    """
    exe = ensure_venv()
    template, made = _template(exe)
    data = workdir / "ls-data"
    shutil.copytree(template, data)
    server = _start(exe, data, document_root, made, workdir / "ls-server.log")
    try:
        if wait:
            wait_healthy(server)
        yield server
    finally:
        server.stop()
