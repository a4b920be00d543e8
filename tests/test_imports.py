"""Imports: importing the app builds no broker (nothing calls Dramatiq's get_broker() at import time),
and the package has no import cycle (its floors are import-linter's contract in setup.cfg)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import grimp
import pytest

from tests.integration.processes import ROOT

MODULES = [
    "django_messenger",
    "django_messenger.bus",
    "django_messenger.mixins",
    "django_messenger.viewsets",
    "django_messenger.persisters",
    "django_messenger.routing",
    "django_messenger.encoding",
    "django_messenger.transports.dramatiq.binding",
    "django_messenger.locator",
    "django_messenger.message_types",
    "django_messenger.publishing",
    "django_messenger.publishing.rabbitmq",
    "django_messenger.testing",
    "django_messenger.checks",
    "django_messenger.stamps",
    "django_messenger.delays",
]


def test_importing_every_module_sets_no_global_broker():
    code = (
        "import django; from django.conf import settings; settings.configure(INSTALLED_APPS=[]); "
        f"import {', '.join(MODULES)}; "
        "import dramatiq.broker; assert dramatiq.broker.global_broker is None, dramatiq.broker.global_broker"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr


def import_cycles(package: str) -> list[list[str]]:
    """The import cycles of ``package``: its strongly connected modules, imports inside functions included."""
    graph = grimp.build_graph(package)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        # Tarjan's algorithm, iteratively: (module, the modules it imports still to visit)
        work = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            module, pending = work[-1]
            for imported in pending:
                if imported not in index:
                    index[imported] = low[imported] = len(index)
                    stack.append(imported)
                    work.append((imported, iter(sorted(imports[imported]))))
                    break
                if imported in stack:
                    low[module] = min(low[module], index[imported])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def test_the_counter_finds_a_cycle(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a package whose two modules import each other (one inside a function)
    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    # Then the counter finds that one cycle
    assert import_cycles("circle") == [["circle.a", "circle.b"]]


def test_the_package_has_no_import_cycle() -> None:
    # Imports inside functions count: they hid a ten-module circle once (issue 8)
    assert import_cycles("django_messenger") == []
