"""Benchmark results on disk (one JSON file per suite in the output folder), and how their rows are
read: the label of a row or model, a user-CPU scaling fit, numbers as the report prints them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from localframe.bench import peers
from localframe.files import write_text


def save(result: dict[str, Any], out: str | Path, name: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    write_text(path, json.dumps(result, indent=1, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load(out: str | Path) -> dict[str, Any]:
    """All suite results found in ``out``: speed, scaling, accuracy-<task>, profile, peers."""
    out = Path(out)
    results: dict[str, Any] = {}
    for path in sorted(out.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return results


def number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def row_label(row: dict[str, Any]) -> str:
    return row.get("label") or row.get("model", "?")


def md_run_label(row: dict[str, Any]) -> str:
    """What an ``md``-suite row ran: "eager, one trajectory", "compiled, 64 replicas", or "–" for GFN2-xTB."""
    if row["engine"] == "GFN2-xTB":
        return "–"
    return ("compiled" if row["compiled"] else "eager") + ", " + (
        f"{row['replicas']} replicas" if row["replicas"] else "one trajectory")


def model_label(scaling: dict[str, Any], name: str) -> str:
    for row in scaling["boxes"]["rows"]:
        if row["model"] == name:
            return row_label(row)
    return peers.label(name) if peers.is_peer(name) else f"localframe {name}"


def user_fit(row: dict[str, Any]) -> dict[str, Any] | None:
    """α of user CPU time (CPU minus system time) over a model's box sizes."""
    from localframe.bench.scaling import fit_exponent

    measured = [p for p in row.get("points", []) if "cpu_s" in p and "sys_s" in p]
    return fit_exponent([p["atoms"] for p in measured], [max(p["cpu_s"] - p["sys_s"], 1e-9) for p in measured])
