"""Does what a page tells the reader to install bring every module its blocks import?

CI has every extra installed, so a block importing a package that no extra named on its
page brings (``opentelemetry.sdk`` with only ``[otel]``) runs here and fails for a reader.
This check works from ``pyproject.toml`` and the installed packages' metadata instead: a
page's imports must be the standard library, this repository, or modules owned by a
distribution in the dependency closure of the core package plus the extras the page names
(``mcp-resilient[otel-sdk]``, anywhere on the page).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "mcp-resilient"
_LOCAL = {"mcp_resilient", "examples", "tests", "__main__"}
#: ``mcp-resilient[a,b]``, or an extra alone in backticks: `` `[pydantic-ai]` ``.
_NAMED_EXTRAS = re.compile(r"(?:mcp-resilient|`)\[(?P<extras>[A-Za-z0-9_,\- ]+)\]")


@functools.cache
def _project() -> dict[str, list[str]]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = data["project"]
    return {"": list(project["dependencies"]), **project["optional-dependencies"]}


def closure(extras: frozenset[str]) -> frozenset[str]:
    """Canonical names of every distribution the core package plus ``extras`` installs."""
    found: set[str] = set()
    pending = [Requirement(r) for r in _project()[""]]
    pending += [Requirement(f"{PACKAGE}[{extra}]") for extra in extras]
    seen_extras: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name == PACKAGE:
            for extra in requirement.extras - seen_extras:
                seen_extras.add(extra)
                pending += [Requirement(r) for r in _project()[extra]]
            continue
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                pending.append(child)
    return frozenset(found)


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def owners(module: str) -> frozenset[str]:
    """Canonical names of the distributions that installed ``module`` (empty: not found).

    A namespace package (``opentelemetry``) has several; a module has one.
    """
    spec = importlib.util.find_spec(module)
    if spec is None:
        return frozenset()
    if spec.origin in (None, "namespace"):
        locations = [Path(p).resolve() for p in spec.submodule_search_locations or []]
    else:
        locations = [Path(spec.origin).resolve()]
    found: set[str] = set()
    for name in _packages_distributions().get(module.split(".")[0], []):
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file))).resolve()
            if any(path == where or where in path.parents for where in locations):
                found.add(canonicalize_name(name))
                break
    return frozenset(found)


def imported_modules(code: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def named_extras(page_text: str) -> frozenset[str]:
    extras: set[str] = set()
    for match in _NAMED_EXTRAS.finditer(page_text):
        extras.update(e.strip() for e in match["extras"].split(","))
    return frozenset(extras)


def missing_installs(page_text: str, blocks: list[str]) -> list[str]:
    """What the page imports that the installs it names do not bring, as messages."""
    extras = named_extras(page_text)
    unknown = extras - set(_project())
    problems = [f"the page names extras that do not exist: {sorted(unknown)}"] if unknown else []
    allowed = closure(extras & set(_project()))
    named = ", ".join(f"[{e}]" for e in sorted(extras)) or "no extra"
    for code in blocks:
        for module in sorted(imported_modules(code)):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in _LOCAL:
                continue
            dists = owners(module)
            if not dists:
                problems.append(f"imports {module}, which is not installed here")
            elif not dists & allowed:
                problems.append(
                    f"imports {module} (from {', '.join(sorted(dists))}), which the core "
                    f"package and {named} named on the page do not install"
                )
    return problems
