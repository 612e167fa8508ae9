"""A Flask hello-world served by the same gunicorn configuration as the allocator in
bench_randomize.py: the ceiling that the server, the loopback and the client impose on any
endpoint of this machine, printed beside the randomization figures (issue 16)."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}
