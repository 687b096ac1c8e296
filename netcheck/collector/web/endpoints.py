"""The "Endpoint data" page's work: for the versions the fleet tested against, what changed in the
data the collector has now (:mod:`netcheck.m365.diff`, Optimize first), as ``netcheck endpoints diff`` says it.

The collector can diff a fleet version only against data it holds: the bundled snapshot and the
cache of ``netcheck endpoints update`` (on the collector's host). Any other old version is named,
with the command that diffs it from a saved file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netcheck.errors import NetcheckError
from netcheck.m365.catalog import Catalog, load_catalog
from netcheck.m365.diff import diff_sets, render_diff_text
from netcheck.m365.webservice import select_data


def changes(fleet: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (instance, version) the fleet tested: its devices, the version in use now,
    and the diff text (None when it is the version in use; ``missing`` when the data is not held)."""
    in_use: dict[str, tuple[Catalog, Catalog] | str] = {}
    out = []
    for row in fleet:
        instance, version = str(row["instance"]), str(row["version"])
        if instance not in in_use:
            try:
                current, _, _ = select_data(instance)
                in_use[instance] = (current, load_catalog(instance))
            except NetcheckError as exc:
                in_use[instance] = str(exc)
        held = in_use[instance]
        entry: dict[str, Any] = {"instance": instance, "version": version, "devices": row["devices"],
                                 "in_use": None, "diff": None, "missing": None}
        if isinstance(held, str):
            entry["missing"] = f"the collector cannot load its {instance} endpoint data: {held}"
            out.append(entry)
            continue
        current, bundled = held
        entry["in_use"] = current.version
        if version != current.version:
            old = bundled if bundled.version == version else None
            if old is None:
                entry["missing"] = (f"the collector does not hold version {version}; with a saved copy: "
                                    f"netcheck endpoints diff OLD.json {instance}")
            else:
                result = diff_sets(old.sets, current.sets)
                entry["diff"] = render_diff_text(result, f"{instance} version {version}",
                                                 f"{instance} version {current.version}")
        out.append(entry)
    return out
