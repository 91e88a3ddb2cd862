"""An import-linter contract type: no module imports a private name (``_x``) from another module.

import-linter's own ``private_modules`` contract covers private *modules*; this one covers private *names*
(functions, classes, constants), e.g. ``from longdoc.attention.lsh import _make_plan``: what another module needs
must be public API. Configured in pyproject.toml (``[tool.importlinter] contract_types``).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _source(module: str) -> Path | None:
    """The file of ``module``, found from its root package's directory without importing the module itself
    (importing would run package code, which fails on exactly the import cycles a contract should report)."""
    root, *rest = module.split(".")
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


class PrivateNamesContract(Contract):
    """Modules of ``containers`` import no name starting with ``_`` from another module (dunders excepted).

    Configuration options:
        - containers: the packages whose modules are checked.
    """

    type_name = "private_names"
    containers = fields.SetField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        violations = []
        for module in sorted(graph.modules):
            if not any(module == c or module.startswith(c + ".") for c in self.containers):  # type: ignore
                continue
            path = _source(module)
            if path is None:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom):
                    continue
                source = _absolute(module, path.name == "__init__.py", node)
                if source == module:
                    continue
                for alias in node.names:
                    if _private(alias.name):
                        violations.append((module, node.lineno, source, alias.name))
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, line, source, name in check.metadata["violations"]:
            output.print_error(f"{module}:{line} imports the private name {name} from {source}", bold=False)
            output.new_line()
