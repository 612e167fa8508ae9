"""A real `allocator serve` (gunicorn) in a child process, for what only the real server does: its
own refusals before the application sees a request, its headers. Start it with `served(...)`; talk
to it with `exchange(...)`, which sends raw bytes so that a test can send what no client library
would (an 9000-byte request line, 101 headers, a line that is not HTTP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ALLOCATOR = Path(sys.executable).parent / "allocator"


@dataclass(frozen=True)
class Served:
    host: str
    port: int
    log: Path


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(database_url: str, key_dir: Path, log_dir: Path, *, env: str = "development") -> Iterator[Served]:
    """`allocator serve --workers 1` on a free loopback port, for a migrated database; stopped (and
    waited for) afterwards. Fails with the server's log if it does not answer within 60 s."""
    port = _free_port()
    log = log_dir / "serve.log"
    environment = {
        **os.environ,
        "ALLOCATOR_DATABASE_URL": database_url,
        "ALLOCATOR_KEY_DIR": str(key_dir),
        "ALLOCATOR_ENV": env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ALLOCATOR), "serve", "--port", str(port), "--workers", "1"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if exchange(Served("127.0.0.1", port, log), b"GET /login HTTP/1.1\r\nHost: t\r\n\r\n").status:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"allocator serve did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.3)
        yield Served("127.0.0.1", port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def exchange(server: Served, raw: bytes, *, timeout: float = 10) -> Answer:
    """Send `raw` (a whole request; the server is asked to close after it) and read the answer."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as conn:
        conn.sendall(raw)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break  # gunicorn may close before reading all of a refused request
            if not chunk:
                break
            chunks.append(chunk)
            data = b"".join(chunks)
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
                }
                length = headers.get("content-length")
                if length is not None and len(body) >= int(length):
                    break
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0]:
        raise ConnectionError("no answer")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), headers, body)
