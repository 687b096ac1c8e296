"""Chart geometry for the dashboard's server-rendered SVG (the templates draw it, escaped).

Pure functions from numbers to coordinates: no markup here, no script in the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WIDTH = 720
HEIGHT = 160


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    series: str
    title: str


def stacked_bars(rows: Sequence[Mapping[str, Any]], series: Sequence[str], label: str = "day") -> dict[str, Any]:
    """One bar per row, stacked by ``series`` (counts), scaled to the tallest bar."""
    top = max([sum(int(r[s]) for s in series) for r in rows] + [1])
    step = WIDTH / max(1, len(rows))
    rects = []
    for i, row in enumerate(rows):
        y = float(HEIGHT)
        for s in series:
            h = HEIGHT * int(row[s]) / top
            if h > 0:
                y -= h
                rects.append(Rect(round(i * step + 1, 1), round(y, 1), round(step - 2, 1), round(h, 1), s,
                                  f"{row[label]}: {row[s]} {s}"))
    return {"width": WIDTH, "height": HEIGHT, "rects": rects, "top": top,
            "first": rows[0][label] if rows else "", "last": rows[-1][label] if rows else ""}


def line(points: Sequence[tuple[float, int]], top: int) -> dict[str, Any]:
    """A polyline of (x, y) values, x from 0 to its largest, y from 0 to ``top``."""
    span = max([p[0] for p in points] + [1.0])
    coords = " ".join(f"{WIDTH * x / span:.1f},{HEIGHT - HEIGHT * min(y, top) / top:.1f}" for x, y in points)
    return {"width": WIDTH, "height": HEIGHT, "points": coords, "top": top, "hours": round(span / 3600, 1)}


def spans(items: Sequence[Mapping[str, Any]], start: float, end: float, lane: float = 14.0) -> dict[str, Any]:
    """One bar per item (``start``/``end`` in seconds since the epoch, ``end`` None: still going),
    one lane each, on the same x axis as a chart of [start, end]: for a timeline beside a curve."""
    span = max(1.0, end - start)
    bars = []
    for i, item in enumerate(items):
        x0 = max(start, float(item["start"]))
        x1 = end if item.get("end") is None else min(end, float(item["end"]))
        x = WIDTH * (x0 - start) / span
        w = max(2.0, WIDTH * (x1 - x0) / span)
        right = x + w > WIDTH / 2  # the label on the side with room
        bars.append({"x": round(x, 1), "y": round(i * lane, 1), "w": round(w, 1), "h": round(lane - 3, 1),
                     "label": item["label"], "title": item["title"], "series": item.get("series", ""),
                     "tx": round(x - 3 if right else x + w + 3, 1), "anchor": "end" if right else "start"})
    return {"width": WIDTH, "height": round(max(1, len(items)) * lane, 1), "bars": bars}
