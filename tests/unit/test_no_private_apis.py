"""No new use of a dependency's private or internal API in services/ or shared/.

Scanned (statically, with `ast`):
- an attribute whose name starts with one underscore read on anything but `self`/`cls` or a name imported
  from the project's own modules (namedtuple's documented `_make`, `_replace`, `_asdict`, `_fields` excepted);
- an import from a module path with an underscore-prefixed part, or from a module known to be internal;
- a class that subclasses a third-party class and defines a single-underscore method the library's class
  already has: it overrides the library's private hooks.

The uses that existed when the scan was introduced are listed in `private_api_baseline.txt`; the list may only
shrink. A new use fails the first test; a listed use that is gone fails the second until its line is removed."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASELINE = Path(__file__).with_name("private_api_baseline.txt")
OWN = ("safe_procurement", "tests")
NAMEDTUPLE_API = {"_make", "_replace", "_asdict", "_fields", "_field_defaults"}
INTERNAL_MODULES = ("faststream.redis.parser", "sqlalchemy.sql.base", "sqlalchemy.engine.default")


def _is_own(module: str | None, level: int) -> bool:
    return level > 0 or (module or "").split(".")[0] in OWN


def _scan(path: Path) -> set[str]:
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    imported: dict[str, str] = {}  # local name → the third-party module it comes from
    own_names: set[str] = set()  # names bound to the project's own modules and objects
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _is_own(node.module, node.level):
            own_names.update(a.asname or a.name for a in node.names)
        if isinstance(node, ast.ImportFrom) and not _is_own(node.module, node.level):
            module = node.module or ""
            if any(p.startswith("_") and not p.startswith("__") for p in module.split(".")) or module.startswith(
                INTERNAL_MODULES
            ):
                found.add(f"{rel}::from {module} import {', '.join(a.name for a in node.names)}")
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{module}:{alias.name}"
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.add(f"{rel}::from {module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in OWN and alias.asname is None:
                    top = alias.name.split(".")[0]
                    imported[top] = top
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and (node.value.id in ("self", "cls") or node.value.id in own_names):
                continue
            if node.attr in NAMEDTUPLE_API:
                continue
            found.add(f"{rel}::{ast.unparse(node)}")
        elif isinstance(node, ast.ClassDef):
            bases = {ast.unparse(b): _resolve(ast.unparse(b), imported) for b in node.bases}
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    and item.name.startswith("_")
                    and not item.name.startswith("__")
                ):
                    for name, base in bases.items():
                        if base is not None and hasattr(base, item.name):
                            found.add(f"{rel}::{node.name}({name}).{item.name}")
    return found


def _resolve(dotted: str, imported: dict[str, str]) -> object | None:
    """The third-party object a base-class expression names, or None (the project's own, or unresolvable)."""
    head, *rest = dotted.split(".")
    if head not in imported:
        return None
    module, _, attr = imported[head].partition(":")
    try:
        obj: object = importlib.import_module(module)
        for part in ([attr] if attr else []) + rest:
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj


def _found() -> set[str]:
    out: set[str] = set()
    for top in ("services", "shared"):
        for path in sorted((ROOT / top).rglob("*.py")):
            out |= _scan(path)
    return out


def _baseline() -> set[str]:
    return {
        line.strip()
        for line in BASELINE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }


def test_no_new_private_api_use() -> None:
    new = sorted(_found() - _baseline())
    assert not new, "private or internal API of a dependency used (use its public API instead):\n" + "\n".join(new)


def test_the_baseline_only_shrinks() -> None:
    gone = sorted(_baseline() - _found())
    assert not gone, "no longer used: remove these lines from private_api_baseline.txt:\n" + "\n".join(gone)


def test_the_scan_finds_each_kind(tmp_path: Path) -> None:
    sample = ROOT / "shared" / "_scan_sample_for_test.py"
    sample.write_text(
        "from faststream.redis.parser.binary import BinaryMessageFormatV1\n"
        "from aiosqlite import Connection\n"
        "class C(Connection):\n"
        "    def _execute(self): ...\n"
        "    def _not_a_hook_of_the_library(self): ...\n"
        "def f(x):\n"
        "    return x._connection, self_like._make\n"
    )
    try:
        found = _scan(sample)
    finally:
        sample.unlink()
    rel = "shared/_scan_sample_for_test.py"
    assert f"{rel}::from faststream.redis.parser.binary import BinaryMessageFormatV1" in found
    assert f"{rel}::C(Connection)._execute" in found
    assert f"{rel}::C(Connection)._not_a_hook_of_the_library" not in found
    assert f"{rel}::x._connection" in found
    assert not any(s.endswith("._make") for s in found)
