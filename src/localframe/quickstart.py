"""``localframe quickstart``: the main job end to end with no download.

1. QM9 from the installed qm9pack package: molecules, elements, target statistics.
2. A GFN2-xTB Langevin trajectory of ethanol at 500 K (an MD17-style data set) in ``OUT/``.
3. A summary of that data set, ready for training.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console


def run(out: str | Path = "quickstart", frames: int = 200, seed: int = 0) -> int:
    from localframe.data import info, sources
    from localframe.reference import sample

    console = Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    console.rule("1. QM9 (offline, from qm9pack)")
    start = time.perf_counter()
    info.render(info.summarize(sources.load("qm9")), console)
    console.print(f"[dim]loaded in {time.perf_counter() - start:.1f} s[/dim]")

    console.rule("2. GFN2-xTB reference data: ethanol, Langevin MD at 500 K")
    path = out / "ethanol.extxyz"
    start = time.perf_counter()
    sample("CCO", path, temperature=500.0, frames=frames, seed=seed)
    console.print(f"wrote {frames} frames to {path} in {time.perf_counter() - start:.1f} s")

    console.rule("3. The new data set")
    info.render(info.summarize(sources.load(path)), console)
    console.print(f"\nNext: [bold]localframe data info {path}[/bold]; models: "
                  "[bold]python -c 'import localframe.models as m; print(m.available())'[/bold]")
    return 0
