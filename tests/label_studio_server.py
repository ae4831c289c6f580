"""A real Label Studio server on 127.0.0.1 for integration tests, from its own environment.

Label Studio pins Django and friends that clash with the project's, so it lives in
``.venv-label-studio`` (``make label-studio`` creates it; ``make test`` depends on it). It runs
with telemetry, the update check and error reporting off, and with every outbound HTTP(S)
request pointed at a closed local port, so nothing leaves the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABEL_STUDIO = ROOT / ".venv-label-studio" / "bin" / "label-studio"
START_TIMEOUT_S = 180  # first start migrates a fresh database (about 20 s on 2 cores)
TOKEN = "breastcls-test-token-0123456789"
OFFLINE = {
    "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
    "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
    "LABEL_STUDIO_FEATURE_FLAGS_OFFLINE": "true",
    "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
    # Anything that still tries the internet hits a closed port on this machine.
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    log: Path


def unavailable(message: str) -> None:
    """CI must run the test (it fails); elsewhere a missing server skips it."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def label_studio_server(data_dir: Path, document_root: Path) -> Iterator[Server]:
    """Start Label Studio serving local files under ``document_root``; stop it after."""
    if not LABEL_STUDIO.is_file():
        unavailable(f"Label Studio is not installed at {LABEL_STUDIO}; run `make label-studio`")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = data_dir / "label_studio.log"
    env = {**os.environ, **OFFLINE, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root)}
    command = [str(LABEL_STUDIO), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data_dir), "--username",
               "reviewer@localhost", "--password", "reviewer-password", "--user-token", TOKEN,
               "--enable-legacy-api-token", "--log-level", "WARNING"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                unavailable(f"Label Studio did not start on {url} (exit code "
                            f"{process.poll()}); its log:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield Server(url, TOKEN, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
