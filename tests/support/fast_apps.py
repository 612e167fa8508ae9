"""The suite builds a new Flask application for almost every test (each over its own rolled-back
database, clock and settings), so what `create_app` and a first request cost once per process in
production is paid thousands of times here. Two of those costs are the same work every time, and
are shared between the applications of one test process:

- Werkzeug compiles a URL builder for every rule of every new application from the rule's parsed
  form (an AST compiled to Python code), about two thirds of `create_app`'s 75 ms. The builder
  depends only on the rule's text, its parsed parts and its defaults, and reads everything else from
  the rule it is called on, so one compiled builder serves the same rule in every application.
- Jinja compiles every template again for every new environment. A shared bytecode cache, keyed
  (by Jinja) on the template's name and checked against its source, hands the compiled code over.

Nothing here changes what an application does: production builds one application per process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from flask import Flask
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket
from werkzeug.routing.rules import Rule

_builders: dict[Hashable, Callable[..., tuple[str, str]]] = {}


class _SharedBytecode(BytecodeCache):
    def __init__(self) -> None:
        self._codes: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._codes.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)  # discarded by Jinja when the source's checksum differs

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._codes[bucket.key] = bucket.bytecode_to_string()


def install() -> None:
    """Share compiled URL builders and template code between this process's applications."""
    if getattr(Rule._compile_builder, "_shared", False):
        return
    compile_builder = Rule._compile_builder

    def shared_builder(self: Rule, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        key = (self.rule, tuple(self._trace), repr(sorted((self.defaults or {}).items())), append_unknown)
        builder = _builders.get(key)
        if builder is None:
            builder = _builders[key] = compile_builder(self, append_unknown)
        return builder

    shared_builder._shared = True  # type: ignore[attr-defined]
    Rule._compile_builder = shared_builder  # type: ignore[method-assign]

    bytecode = _SharedBytecode()
    create_environment = Flask.create_jinja_environment

    def with_shared_bytecode(self: Flask) -> Any:
        environment = create_environment(self)
        environment.bytecode_cache = bytecode
        return environment

    Flask.create_jinja_environment = with_shared_bytecode  # type: ignore[method-assign]
