"""The package's layers, bottom to top, and what each may not import.

::

    netcheck/
      models.py, errors.py, deadline.py,   the bottom: data passed around (targets, probe results,
      names.py, files.py, paths.py         findings, media figures), errors, deadlines, host names,
                                           bounded file reads, per-user directories
      m365/                                Microsoft's data: catalog (endpoint sets, workloads, the
                                           bundled snapshot), webservice (fetch, cache, updater), diff
      proxy/                               proxy decisions: settings (environment, bypass lists),
                                           pac (fetch, sandboxed evaluation), decision (which proxy a URL takes)
      platform/                            the OS behind one interface (base), one module per OS,
                                           the per-OS proxy readers included
      probes/                              (target, spec, deadline) -> result: dns, tcp, tls, http, stun, realm
      policy.py, fleet_policy.py,          the organisation's configuration: thresholds, the fleet
      site_profile.py                      policy the collector sends, site profiles
      assess/                              pure decisions on measured facts: verdict, media, outage
                                           (causes, prediction, remediation), site_cases, site_decisions,
                                           what_if, service_health; report (the Report, outage included)
      render/                              text, JSON and HTML from a Report
      runner.py, site_facts.py, check.py   the wiring that measures: runs the probes, gathers the
                                           prediction's facts, makes the Report
      commands/, agent/, collector/, cli   the programs

The rules below are the import edges that must not exist (any import: top level, inside a
function or under TYPE_CHECKING). ``ALLOWED`` names the few modules of a forbidden package a
layer may still use, because they are data, not behaviour.
"""

from __future__ import annotations

import ast
from pathlib import Path

import netcheck

PACKAGE = Path(netcheck.__file__).resolve().parent

BOTTOM = ("netcheck.models", "netcheck.errors", "netcheck.deadline", "netcheck.names", "netcheck.files",
          "netcheck.paths")
#: what sits above every library layer: nothing below may import it
PROGRAMS = ("netcheck.check", "netcheck.runner", "netcheck.site_facts", "netcheck.commands", "netcheck.agent",
            "netcheck.collector", "netcheck.cli", "netcheck.crash", "netcheck.__main__")

#: (importing module or package, packages or modules it must not import)
FORBIDDEN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("netcheck.models", ("netcheck.",)),  # nothing from netcheck at all
    *((m, ("netcheck.",)) for m in BOTTOM if m != "netcheck.models"),  # but other bottom modules
    ("netcheck.m365", ("netcheck.assess", "netcheck.render", "netcheck.probes", "netcheck.proxy",
                       "netcheck.platform", *PROGRAMS)),
    ("netcheck.proxy", ("netcheck.assess", "netcheck.render", "netcheck.probes", "netcheck.m365", *PROGRAMS)),
    ("netcheck.platform", ("netcheck.assess", "netcheck.render", "netcheck.probes", "netcheck.m365",
                           "netcheck.proxy", *PROGRAMS)),
    ("netcheck.probes", ("netcheck.assess", "netcheck.render", "netcheck.m365", *PROGRAMS)),
    ("netcheck.assess", ("netcheck.probes", "netcheck.render", "netcheck.proxy", "netcheck.platform", *PROGRAMS)),
    ("netcheck.render", ("netcheck.probes", "netcheck.platform", "netcheck.proxy", "netcheck.m365", *PROGRAMS)),
)

#: (importing module or package, modules of a forbidden package it may import)
ALLOWED: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((m, BOTTOM) for m in BOTTOM if m != "netcheck.models"),
    # the per-OS proxy readers fill in the proxy settings' data type
    ("netcheck.platform", ("netcheck.proxy.settings",)),
    # interfaces and egress as the prediction reasons over them: data, no OS calls
    ("netcheck.assess", ("netcheck.platform.base",)),
)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix if prefix.endswith(".") else f"{prefix}.")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported(source: str) -> set[str]:
    """Every netcheck module ``source`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, "netcheck uses absolute imports only"
            # `from netcheck.m365 import webservice` imports the submodule; `from x import Name`, x
            found.update(f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                         for a in node.names)
    return {name for name in found if _within(name, "netcheck")}


def violations(module: str, source: str) -> list[str]:
    """The imports of ``module`` (its text ``source``) the rules forbid, as "a -> b"."""
    bad = []
    for name in sorted(imported(source)):
        if _within(name, module):
            continue
        forbidden = any(_within(module, who) and any(_within(name, p) for p in banned) for who, banned in FORBIDDEN)
        allowed = any(_within(module, who) and any(_within(name, p) for p in ok) for who, ok in ALLOWED)
        if forbidden and not allowed:
            bad.append(f"{module} -> {name}")
    return bad


def test_the_package_keeps_its_layers() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50
    bad = [v for path in modules for v in violations(module_name(path), path.read_text(encoding="utf-8"))]
    assert bad == []


def test_every_layer_named_in_the_rules_exists() -> None:
    names = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for who, banned in FORBIDDEN + ALLOWED:
        for name in (who, *banned):
            if name != "netcheck.":
                assert any(_within(n, name) for n in names), name


def test_the_rules_catch_an_import_against_them() -> None:
    assert violations("netcheck.models", "if TYPE_CHECKING:\n    from netcheck.assess.outage import X\n") \
        == ["netcheck.models -> netcheck.assess.outage"]
    assert violations("netcheck.probes.stun", "def f():\n    from netcheck.assess import media\n") \
        == ["netcheck.probes.stun -> netcheck.assess.media"]
    assert violations("netcheck.assess.verdict", "import netcheck.platform.linux\n") \
        == ["netcheck.assess.verdict -> netcheck.platform.linux"]
    assert violations("netcheck.assess.verdict", "from netcheck.platform.base import Interface\n") == []
    assert violations("netcheck.render.text", "from netcheck.m365 import webservice\n") \
        == ["netcheck.render.text -> netcheck.m365.webservice"]
    assert violations("netcheck.files", "from netcheck.errors import ConfigError\n") == []
    assert violations("netcheck.files", "from netcheck.m365.catalog import Catalog\n") \
        == ["netcheck.files -> netcheck.m365.catalog"]
