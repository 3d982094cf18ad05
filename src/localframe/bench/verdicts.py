"""The release targets as data, and their verdicts against the suites' results.

Each entry of :data:`TARGETS` names a kind of check and its figures (models, references, thresholds);
:func:`targets` measures every entry on the results and says met, missed, a qualified verdict, or
"not measured". A new target of a known kind is one more entry; no model name is written in code.
:data:`SPEED_REFERENCES` names the models the speed tables compare every model with.
"""

from __future__ import annotations

from typing import Any

from localframe.bench import peers
from localframe.bench.results import number, user_fit

#: (kind, settings). ``model``/``reference`` are (registry name, display name) pairs.
TARGETS: list[tuple[str, dict[str, Any]]] = [
    ("trains_faster", dict(model=("leftnet", "LEFTNet"), reference=("pyg_dimenet++", "DimeNet++"), factor=2.0,
                           workloads=("qm9", "ethanol"))),
    ("lower_error", dict(model=("leftnet", "LEFTNet"), reference=("pyg_dimenet++", "DimeNet++"),
                         keys={"qm9": ("U0_atom", "U0", "eV")}, default_key=("forces", "forces", "eV/Å"))),
    ("as_fast", dict(model=("schnet", "our SchNet"), reference=("pyg_schnet", "PyG's SchNet"))),
    ("linear", dict(exponent=1.1, full_range=0.9e5)),
    ("faster_than_xtb", dict(from_atoms=21)),
    ("speedup_over_xtb", dict(factor=100.0, atoms=(900, 1100))),
    ("trains_faster", dict(model=("leftnet-cpu", "LEFTNet (H 64, configs/qm9_U0.yaml)"), reference=("schnet", "our SchNet"),
                           factor=1 / 1.3, workloads=("qm9",))),
    ("md_versus_xtb", dict(model=("leftnet-quickstart", "the quickstart's LEFTNet"), system="ethanol", factor=3.0)),
    ("replica_speedup", dict(model=("leftnet-quickstart", "the quickstart's LEFTNet"), systems=("ethanol", "aspirin"),
                             factor=20.0)),
]

#: The rows every speed table divides each model's throughput by, as (registry name, display name): the
#: report's ratio columns "train × <display name>" and "infer × <display name>", in this order.
SPEED_REFERENCES: tuple[tuple[str, str], ...] = (("schnet", "our SchNet"), ("pyg_schnet", "PyG SchNet"))


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """Every target of :data:`TARGETS`, each with the measured figure and whether it is met."""
    out = []
    for kind, settings in TARGETS:
        row = CHECKS[kind](results, **settings)
        if row is not None:
            out.append(row)
    return out


def _speed_row(speed: dict | None, workload: str, model: str) -> dict | None:
    if not speed:
        return None
    return next((r for r in speed["results"] if r["workload"] == workload and r["model"] == model and "train" in r), None)


def _trains_faster(results, model, reference, factor, workloads) -> dict[str, str]:
    speed = results.get("speed")
    ratios = []
    for wname in workloads:
        a, b = _speed_row(speed, wname, model[0]), _speed_row(speed, wname, reference[0])
        if a and b:
            ratios.append((wname, a["train"]["structures_per_s"] / b["train"]["structures_per_s"]))
    name = (f"{model[1]} trains ≥ {factor:g}× faster than {reference[1]} per structure" if factor >= 1 else
            f"{model[1]}'s training step costs ≤ {1 / factor:.2g}× {reference[1]}'s (≥ {factor:.2f}× its structures/s)")
    return _target(name,
                   "; ".join(f"{w}: {r:.2f}×" for w, r in ratios), all(r >= factor for _, r in ratios) if ratios else None)


def _lower_error(results, model, reference, keys, default_key) -> dict[str, str]:
    from localframe.bench.accuracy import summarize

    accuracy = {k.split("-", 1)[1]: v for k, v in results.items() if k.startswith("accuracy-")}
    comparisons = []
    for task_name, result in accuracy.items():
        rows = result["tasks"].get(task_name, {}).get("rows", [])
        key, shown, unit = keys.get(task_name, default_key)
        st = summarize(rows, key)
        if model[0] in st and reference[0] in st:
            comparisons.append((task_name, shown, unit, st[model[0]]["mean"], st[reference[0]]["mean"]))
    return _target(f"{model[1]} reaches lower error than {reference[1]} at equal budget",
                   "; ".join(f"{t} {k} MAE {a * 1000:.3g} vs {b * 1000:.3g} m{u}" for t, k, u, a, b in comparisons),
                   all(a < b for *_, a, b in comparisons) if comparisons else None)


def _as_fast(results, model, reference) -> dict[str, str]:
    """A slower median whose interquartile range overlaps the other's is a tie."""
    speed = results.get("speed")
    ratios = []
    if speed:
        for wname in speed["workloads"]:
            a, b = _speed_row(speed, wname, model[0]), _speed_row(speed, wname, reference[0])
            if a and b:
                for mode, key in (("train", "structures_per_s"), ("infer", "atom_steps_per_s")):
                    tie = a[mode]["q25_s"] <= b[mode]["q75_s"] and b[mode]["q25_s"] <= a[mode]["q75_s"]
                    ratios.append((f"{wname} {mode}", a[mode][key] / b[mode][key], tie))
    slower = [(w, r) for w, r, tie in ratios if r < 1.0 and not tie]
    ties = [(w, r) for w, r, tie in ratios if r < 1.0 and tie]
    verdict: bool | str | None = None
    if ratios:
        verdict = False if slower else ("met (the slower medians are within the timings' interquartile ranges)"
                                        if ties else True)
    return _target(f"{model[1]} at least as fast as {reference[1]}",
                   "; ".join(f"{w}: {r:.2f}×" + (" (tie)" if tie and r < 1.0 else "") for w, r, tie in ratios), verdict)


def _linear(results, exponent, full_range) -> dict[str, str]:
    """α of wall time with the default allocator, of user CPU time (the computation without the system
    time of page faults), and of wall time with the allocator tuned; localframe's models only."""
    scaling, tuned = results.get("scaling"), results.get("scaling-tuned")
    fits: dict[str, dict[str, Any]] = {}
    for key, result in (("wall", scaling), ("user", scaling), ("tuned wall", tuned)):
        for row in (result or {}).get("boxes", {}).get("rows", []):
            if peers.is_peer(row["model"]):  # targets are about localframe's models
                continue
            fit = row.get("fit") if key != "user" else user_fit(row)
            if fit:
                fits.setdefault(row["model"], {})[key] = fit
    parts = []
    for model, f in fits.items():
        parts.append(f"{peers.label(model)}: " + ", ".join(f"{k} {v['exponent']:.2f}" for k, v in f.items())
                     + f" ({max(v['range'][0] for v in f.values()):,}–{max(v['range'][1] for v in f.values()):,} atoms)")
    wall_ok = [m for m, f in fits.items() if "wall" in f and f["wall"]["exponent"] <= exponent]
    user_ok = [m for m, f in fits.items() if "user" in f and f["user"]["exponent"] <= exponent]
    with_wall = [m for m, f in fits.items() if "wall" in f]
    verdict: bool | str | None = None
    if with_wall:
        if len(wall_ok) == len(with_wall):
            verdict = True
        else:
            verdict = (f"missed in wall time ({len(wall_ok)} of {len(with_wall)} models); the computation (user CPU) "
                       f"is linear for {len(user_ok)} of {len(with_wall)}")
    covered = all(max(v["range"][1] for v in f.values()) >= full_range for f in fits.values())
    return _target(f"energy + forces cost linear in atoms (α ≤ {exponent} from 10³ to 10⁵)",
                   "; ".join(parts) + ("" if covered or not fits else
                                       " — not the full range: larger sizes skipped by the memory cap (see Scaling)"),
                   verdict)


def _xtb_rows(results) -> tuple[list[dict], list[str]] | None:
    scaling = results.get("scaling")
    if not scaling:
        return None
    rows = [r for r in scaling.get("molecules", {}).get("rows", []) if "time_s" in r.get("xtb", {})]
    names = [n for n in dict.fromkeys(n for r in rows for n in r["models"]) if not peers.is_peer(n)]
    return rows, names


def _faster_than_xtb(results, from_atoms) -> dict[str, str] | None:
    found = _xtb_rows(results)
    if found is None:
        return None
    rows, names = found
    larger = [r for r in rows if r["atoms"] >= from_atoms]
    faster = []
    for name in names:
        sp = [r["xtb"]["time_s"] / r["models"][name]["time_s"] for r in larger if "time_s" in r["models"].get(name, {})]
        if sp:
            faster.append((name, min(sp), all(s > 1.0 for s in sp)))
    return _target("learned potential faster than GFN2-xTB from aspirin size up",
                   "; ".join(f"{peers.label(n)}: slowest {s:.3g}×" for n, s, _ in faster)
                   + (" (xTB: " + ", ".join(f"{r['atoms']} atoms {number(r['xtb']['time_s'])} s" for r in larger)
                      + ")" if larger else ""),
                   per_model([(n, ok) for n, _, ok in faster]))


def _speedup_over_xtb(results, factor, atoms) -> dict[str, str] | None:
    found = _xtb_rows(results)
    if found is None:
        return None
    rows, names = found
    big = [r for r in rows if atoms[0] <= r["atoms"] <= atoms[1]]
    speedups = []
    for name in names:
        sb = [r["xtb"]["time_s"] / r["models"][name]["time_s"] for r in big if "time_s" in r["models"].get(name, {})]
        if sb:
            speedups.append((name, sb[0]))
    return _target(f"≥ {factor:.0f}× faster than GFN2-xTB at 1,000 atoms",
                   "; ".join(f"{peers.label(n)}: {s:.3g}×" for n, s in speedups),
                   per_model([(n, s >= factor) for n, s in speedups]))


def _md_rows(results, model, system) -> list[dict]:
    data = (results.get("md") or {}).get("systems", {}).get(system)
    return [r for r in (data or {}).get("rows", []) if r["model"] == model and "failure" not in r]


def _md_versus_xtb(results, model, system, factor) -> dict[str, str] | None:
    """The faster of the model's eager and compiled single trajectories against GFN2-xTB (per CPU second, paired)."""
    if not results.get("md"):
        return None
    single = [r for r in _md_rows(results, model[0], system) if not r["replicas"] and r.get("vs_xtb_cpu")]
    best = max(single, key=lambda r: r["vs_xtb_cpu"], default=None)
    xtb = _md_rows(results, "gfn2-xtb", system)
    measured = ", ".join(f"{'compiled' if r['compiled'] else 'eager'} {r['vs_xtb_cpu']:.2f}× "
                         f"({number(r['steps_per_cpu_second'])} steps per CPU s)" for r in single)
    if single and xtb:
        measured += f"; GFN2-xTB {number(xtb[0]['steps_per_cpu_second'])} (ratios paired round by round)"
    return _target(f"{model[1]}: one {system} trajectory ≥ {factor:g}× GFN2-xTB's steps/s", measured,
                   None if best is None else best["vs_xtb_cpu"] >= factor)


def _replica_speedup(results, model, systems, factor) -> dict[str, str] | None:
    """The faster of eager and compiled replicas against one eager trajectory (per CPU second, paired), per system."""
    md = results.get("md")
    if not md:
        return None
    found = []
    for system in systems:
        rows = [r for r in _md_rows(results, model[0], system) if r["replicas"] and r.get("vs_eager_cpu")]
        best = max(rows, key=lambda r: r["vs_eager_cpu"], default=None)
        if best:
            found.append((system, best))
    measured = "; ".join(f"{s}: {r['replicas']} replicas {'compiled' if r['compiled'] else 'eager'} "
                         f"{r['vs_eager_cpu']:.2f}×" for s, r in found)
    return _target(f"{model[1]}: {md['settings']['replicas']} replicas ≥ {factor:g}× the replica-steps/s of one eager "
                   "trajectory", measured, all(r["vs_eager_cpu"] >= factor for _, r in found) if found else None)


CHECKS = {"trains_faster": _trains_faster, "lower_error": _lower_error, "as_fast": _as_fast, "linear": _linear,
          "faster_than_xtb": _faster_than_xtb, "speedup_over_xtb": _speedup_over_xtb, "md_versus_xtb": _md_versus_xtb,
          "replica_speedup": _replica_speedup}


def per_model(checks: list[tuple[str, bool]]) -> bool | str | None:
    """True if every model passes, else a verdict naming who passes and who does not."""
    if not checks:
        return None
    if all(ok for _, ok in checks):
        return True
    passed = [peers.label(n) for n, ok in checks if ok]
    failed = [peers.label(n) for n, ok in checks if not ok]
    return f"missed for {', '.join(failed)}" + (f"; met for {', '.join(passed)}" if passed else "")


def _target(name: str, measured: str, met: bool | str | None) -> dict[str, str]:
    verdict = met if isinstance(met, str) else "not measured" if met is None else ("met" if met else "missed")
    return {"target": name, "measured": measured or "–", "verdict": verdict}
