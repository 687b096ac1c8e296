"""A matrix that searches: all-pairs combinations of the scenario knobs.

``python -m tests.lab generate --out DIR`` writes one scenario file per
combination, so that every pair of values of any two knobs appears in at least
one valid scenario. A combination the lab cannot build (``scenario.load``
rejects it) is skipped, and a pair no valid combination can hold is listed
with the reason. ``--subset N`` keeps a fixed, seeded sample of N files (what
CI runs); without it the whole set is written. Generated scenarios carry no
expectations: they measure netcheck against the truth, they do not check the
world.

Greedy pairwise construction: for each still uncovered pair, seeded random
candidates that contain it are tried, and the valid one covering the most
uncovered pairs is kept. Deterministic for a given seed.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import scenario as sc

#: knob -> its values. A value is a TOML fragment per table (merged), so one knob may set several keys.
KNOBS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "laptop_ipv6": {"yes": {}, "no": {"laptop": {"ipv6": False}}},
    "location": {"home": {}, "office": {"laptop": {"location": "office"}}},
    "vpn_mode": {
        "none": {},
        "full": {"vpn": {"mode": "full"}},
        "split": {"vpn": {"mode": "split"}},
        "selective": {"vpn": {"mode": "selective"}},
    },
    "tunnel_families": {"both": {}, "ipv4": {"vpn": {"families": ["ipv4"]}}},
    "exclusions": {
        "none": {},
        "optimize": {"vpn": {"exclude": ["Optimize"]}},
        "optimize_allow": {"vpn": {"exclude": ["Optimize", "Allow"]}},
        "optimize_minus_media": {"vpn": {"exclude": ["Optimize"], "keep": [11]}},
    },
    "exclusion_families": {"both": {}, "ipv4": {"vpn": {"exclude_families": ["ipv4"]}}},
    "cgnat": {"no": {}, "yes": {"vpn": {"cgnat": True}}},
    "dns": {
        "home": {},
        "corp_home": {"dns": {"servers": ["corp", "home"]}},
        "corp": {"dns": {"servers": ["corp"]}},
        "home_corp": {"dns": {"servers": ["home", "corp"]}},
    },
    "proxy": {
        "none": {},
        "explicit_site": {"proxy": {"mode": "explicit", "direct": ["Optimize"]}},
        "pac_site": {"proxy": {"mode": "pac", "direct": ["Optimize"]}},
        "explicit_cloud": {"proxy": {"mode": "explicit", "where": "cloud", "direct": ["Optimize"]}},
        "pac_cloud": {"proxy": {"mode": "pac", "where": "cloud", "direct": ["Optimize"]}},
    },
    "pac_unreachable": {
        "direct": {},
        "fail": {"proxy": {"pac_unreachable": "fail"}},
        "cached": {"proxy": {"pac_unreachable": "cached"}},
    },
    "inspection": {"no": {}, "yes": {"proxy": {"tls_inspection": True}}},
    "identity": {
        "managed": {},
        "adfs_site": {"identity": {"mode": "federated"}},
        "adfs_public": {"identity": {"mode": "federated", "adfs_public": True}},
        "cloud_idp": {"identity": {"mode": "federated", "provider": "cloud"}},
    },
    "profile": {"no": {}, "yes": {"netcheck": {"site_profile": True}}},
    "home_link": {
        "clean": {},
        "slow": {"links": {"home": {"delay_ms": 60}}},
        "lossy": {"links": {"home": {"delay_ms": 20, "loss_pct": 1.5}}},
    },
}

#: Values that mean nothing without another knob's value: such pairs are skipped, not generated.
MEANINGLESS = {
    ("tunnel_families", "ipv4"): ("vpn_mode", {"full", "split", "selective"}),
    ("cgnat", "yes"): ("vpn_mode", {"full", "split", "selective"}),
    ("exclusions", "optimize"): ("vpn_mode", {"split"}),
    ("exclusions", "optimize_allow"): ("vpn_mode", {"split"}),
    ("exclusions", "optimize_minus_media"): ("vpn_mode", {"split"}),
    ("exclusion_families", "ipv4"): ("vpn_mode", {"split"}),
    ("pac_unreachable", "fail"): ("proxy", {"pac_site", "pac_cloud"}),
    ("pac_unreachable", "cached"): ("proxy", {"pac_site", "pac_cloud"}),
    ("inspection", "yes"): ("proxy", {"explicit_site", "pac_site", "explicit_cloud", "pac_cloud"}),
}

Combo = dict[str, str]
#: The fixed seed CI uses.
SEED = 9
#: How many generated scenarios CI runs.
CI_SUBSET = 20


@dataclass(frozen=True)
class Generated:
    files: list[Path]
    skipped: list[str]  # pairs no valid scenario can hold, with the reason
    pairs: int


def _merge(combo: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    doc: dict[str, dict[str, Any]] = {}
    for knob, value in combo.items():
        for table, keys in KNOBS[knob][value].items():
            target = doc.setdefault(table, {})
            for key, v in keys.items():
                if isinstance(v, dict):
                    target.setdefault(key, {}).update(v)
                else:
                    target[key] = v
    if doc.get("vpn", {}).get("mode") == "split" and "exclude" not in doc.get("vpn", {}):
        doc["vpn"]["exclude"] = ["Optimize"]  # a split tunnel needs exclusions; "none" means the default
    return doc


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def to_toml(name: str, combo: Mapping[str, str]) -> str:
    lines = [f'name = "{name}"', f'description = "Generated (all-pairs): {_describe(combo)}."', ""]
    for table, keys in _merge(combo).items():
        if table == "links":
            for link, values in keys.items():
                lines.append(f"[links.{link}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
                lines.append("")
            continue
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
        lines.append("")
    return "\n".join(lines)


def _describe(combo: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in combo.items())


def _meaningless(knob: str, value: str, combo: Mapping[str, str]) -> str | None:
    need = MEANINGLESS.get((knob, value))
    if need and combo.get(need[0]) not in need[1]:
        return f"{knob}={value} needs {need[0]} in {sorted(need[1])}"
    return None


def problem(combo: Mapping[str, str], scratch: Path) -> str | None:
    """Why the lab cannot (or need not) build this combination, or None."""
    for knob, value in combo.items():
        why = _meaningless(knob, value, combo)
        if why:
            return why
    path = scratch / "candidate.toml"
    path.write_text(to_toml("candidate", combo))
    try:
        sc.load(path)
    except sc.ScenarioError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def _repair(combo: Combo, pair: tuple[tuple[str, str], tuple[str, str]]) -> Combo:
    """Reset knobs outside ``pair`` whose value means nothing in this combination to their default."""
    fixed = dict(pair)
    for knob, value in list(combo.items()):
        if knob not in fixed and _meaningless(knob, value, combo):
            combo[knob] = next(iter(KNOBS[knob]))
    return combo


def _pairs(combo: Mapping[str, str]) -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    items = sorted(combo.items())
    yield from itertools.combinations(items, 2)


def generate(seed: int = SEED, tries: int = 60) -> tuple[list[Combo], list[str], int]:
    """All-pairs combinations (valid ones only), the pairs skipped with their reason, and the pair count."""
    rng = random.Random(seed)
    knobs = list(KNOBS)
    wanted = {
        ((a, va), (b, vb)) for a, b in itertools.combinations(sorted(knobs), 2) for va in KNOBS[a] for vb in KNOBS[b]
    }
    total = len(wanted)
    combos: list[Combo] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for pair in sorted(wanted):
            if pair not in wanted:
                continue  # covered meanwhile
            best: Combo | None = None
            best_gain = -1
            defaults = _repair({k: next(iter(KNOBS[k])) for k in knobs} | dict(pair), pair)
            reason = problem(defaults, scratch) or ""
            for attempt in range(tries):
                combo = (
                    defaults
                    if attempt == 0
                    else _repair({k: rng.choice(list(KNOBS[k])) for k in knobs} | dict(pair), pair)
                )
                if problem(combo, scratch):
                    continue
                gain = sum(1 for p in _pairs(combo) if p in wanted)
                if gain > best_gain:
                    best, best_gain = combo, gain
            if best is None:
                (a, va), (b, vb) = pair
                skipped.append(f"{a}={va} with {b}={vb}: {reason}")
                wanted.discard(pair)
                continue
            combos.append(best)
            wanted -= set(_pairs(best))
    return combos, skipped, total


def write(out: Path, seed: int = SEED, subset: int | None = None) -> Generated:
    """Write the generated scenarios (or a seeded subset of them) into ``out``."""
    combos, skipped, total = generate(seed)
    chosen = list(enumerate(combos, start=1))
    if subset is not None and subset < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, subset))
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, combo in chosen:
        path = out / f"gen-{seed}-{i:03d}.toml"
        path.write_text(to_toml(path.stem, combo))
        files.append(path)
    return Generated(files, skipped, total)
