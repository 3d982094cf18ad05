"""Benchmarks: the quick run end to end, peers missing, the report region, and the graph PyG peers see.

No assertion here depends on a timing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys

import numpy as np
import pytest
import torch
from ase.build import molecule

from localframe import cli
from localframe.bench import peers, report
from localframe.data.batch import AtomsBatch

PEER_MODULES = ("torch_geometric", "torch_geometric.nn", "torch_geometric.nn.models", "mace", "mace.modules")
SECTIONS = ("## Benchmark setup", "## Speed", "## Scaling", "### Against GFN2-xTB",
            "## Accuracy under a fixed training budget", "## MD steps per second", "## Targets")
MD_SECTION = "## Molecular dynamics\n\nWritten by someone else; must survive.\n"


def _molecules():
    mols = [molecule(name) for name in ("CH3CH2OH", "C6H6", "H2O", "CH3COOH")]
    for k, m in enumerate(mols):
        m.rattle(0.1, seed=k)
    return mols


def _pairs(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in edge_index.t().tolist()}


def _hide_peers(monkeypatch):
    for name in PEER_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail


# ---------------------------------------------------------------------- the graph peers see
@pytest.mark.parametrize("cutoff", [2.0, 5.0])
def test_radius_graph_replacement_matches_our_neighbour_list(cutoff):
    batch = AtomsBatch.from_atoms(_molecules(), cutoff)
    edges = peers.radius_graph(batch.positions, cutoff, batch.batch)
    # PyG's convention is (source j, target i): flipped, it must be our list of pairs (i, j)
    assert _pairs(edges.flip(0)) == _pairs(batch.edge_index)
    assert edges.shape[1] == batch.edge_index.shape[1]  # no duplicates
    looped = peers.radius_graph(batch.positions, cutoff, batch.batch, loop=True)
    n = batch.positions.shape[0]
    assert _pairs(looped) == _pairs(edges) | {(k, k) for k in range(n)}
    # no pair crosses structures, however close they are placed
    assert bool((batch.batch[edges[0]] == batch.batch[edges[1]]).all())


def test_radius_graph_given_graph_is_returned_inside_the_block():
    pytest.importorskip("torch_geometric")  # the block patches PyG's module-level radius_graph
    batch = AtomsBatch.from_atoms(_molecules()[:2], 5.0)
    given = batch.edge_index[:, :10].flip(0)
    with peers.given_graph(given):
        assert torch.equal(peers.radius_graph(batch.positions, 5.0, batch.batch), given)
    assert peers.radius_graph(batch.positions, 5.0, batch.batch).shape[1] == batch.edge_index.shape[1]


def test_triplets_match_brute_force():
    batch = AtomsBatch.from_atoms(_molecules()[:3], 2.6)
    edge_index = batch.edge_index.flip(0)  # j -> i
    n = batch.positions.shape[0]
    i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji = peers.triplets(edge_index, n)
    assert torch.equal(i, edge_index[1]) and torch.equal(j, edge_index[0])
    found = {(int(a), int(b)) for a, b in zip(idx_kj, idx_ji)}
    src, dst = edge_index.tolist()
    expected = {(kj, ji) for ji, kj in itertools.product(range(len(src)), repeat=2)
                if dst[kj] == src[ji] and src[kj] != dst[ji]}
    assert found == expected
    assert torch.equal(idx_k, edge_index[0][idx_kj]) and torch.equal(idx_i, edge_index[1][idx_ji])
    assert torch.equal(idx_j, edge_index[0][idx_ji])


def test_given_graph_patches_pyg_and_restores_it():
    dimenet = pytest.importorskip("torch_geometric.nn.models.dimenet")
    original = dimenet.radius_graph, dimenet.triplets
    with peers.given_graph():
        assert dimenet.radius_graph is peers.radius_graph and dimenet.triplets is peers.triplets
    assert (dimenet.radius_graph, dimenet.triplets) == original


def test_pyg_schnet_peer_is_a_conservative_invariant_model():
    pytest.importorskip("torch_geometric")
    torch.manual_seed(0)
    model = peers.create("pyg_schnet", cutoff=4.0, hidden_channels=16, num_filters=16, num_interactions=2,
                         num_gaussians=10).double().eval()
    atoms = _molecules()[0]
    batch = AtomsBatch.from_atoms(atoms, 4.0, dtype=torch.float64)
    out = model(batch)
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    turned = model(dataclasses.replace(batch, positions=batch.positions @ rotation.T))
    assert torch.allclose(turned["energy"], out["energy"], atol=1e-10)
    assert torch.allclose(turned["forces"], out["forces"] @ rotation.T, atol=1e-8)
    h = 1e-5
    shifted = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[2, 0] += sign * h
        shifted.append(float(model(AtomsBatch.from_atoms(moved, 4.0, dtype=torch.float64), forces=False)["energy"].detach()))
    assert abs(-(shifted[0] - shifted[1]) / (2 * h) - float(out["forces"][2, 0])) < 1e-6


def test_missing_peer_is_reported_as_skipped(monkeypatch):
    _hide_peers(monkeypatch)
    for name in peers.names():
        state = peers.status(name)
        assert not state["available"] and state["reason"].startswith("skipped")
    with pytest.raises(Exception, match="skipped"):
        peers.create("pyg_schnet")


# ---------------------------------------------------------------------- the report region
def test_report_keeps_what_is_outside_its_markers(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nIntro.\n\n" + MD_SECTION)
    report.write({}, path)
    report.write({}, path)  # regenerating replaces the region, never duplicates it
    text = path.read_text()
    assert text.count(report.START) == 1 and text.count(report.END) == 1
    assert MD_SECTION in text and text.startswith("# Benchmarks\n\nIntro.")
    # a region written first and a section added after it by someone else
    path.write_text(text + "\n## Later\n\nAlso kept.\n")
    report.write({}, path)
    assert "## Later\n\nAlso kept." in path.read_text() and MD_SECTION in path.read_text()
    # missing file: created with a title
    fresh = tmp_path / "new" / "benchmarks.md"
    report.write({}, fresh)
    assert fresh.read_text().startswith("# Benchmarks") and report.START in fresh.read_text()


def test_speed_table_divides_by_the_references_of_the_verdict_table(tmp_path, monkeypatch):
    """The ratio columns come from verdicts.SPEED_REFERENCES (data, not report code): with hand-built
    throughputs each cell is this row's over the reference's, a row without timings gets blank cells."""
    from localframe.bench import verdicts

    monkeypatch.setattr(report, "speed_figure", lambda speed, path: None)
    monkeypatch.setattr(report, "SPEED_REFERENCES", (("ref_a", "A"), ("ref_b", "B")))
    assert verdicts.SPEED_REFERENCES[0][0] == "schnet" and all(len(pair) == 2 for pair in verdicts.SPEED_REFERENCES)

    def row(model, train, infer):
        return {"model": model, "workload": "w", "parameters": 10,
                "train": {"structures_per_s": train}, "infer": {"atom_steps_per_s": infer}}

    workload = {"description": "d", "train_structures": 1, "train_atoms": 2, "train_pairs": 3, "infer_structures": 1,
                "infer_atoms": 2, "infer_pairs": 3, "neighbor_list_s": 0.001, "source": "s"}
    results = {"speed": {"workloads": {"w": workload},
                         "results": [row("ref_a", 10.0, 100.0), row("ref_b", 20.0, 400.0), row("m", 30.0, 200.0),
                                     {"model": "gone", "workload": "w", "skipped": "not installed"}]}}
    lines = report._speed(results, tmp_path / "benchmarks.md")
    header = next(line for line in lines if line.startswith("| model"))
    assert header.endswith("| train × A | train × B | infer × A | infer × B |")
    cells = next(line for line in lines if line.startswith("| m |")).strip("|").split("|")
    assert [float(c) for c in cells[-4:]] == [3.0, 1.5, 2.0, 0.5]  # 30/10, 30/20, 200/100, 200/400
    gone = next(line for line in lines if line.startswith("| gone |")).strip("|").split("|")
    assert len(gone) == len(header.strip("|").split("|")) and [c.strip() for c in gone[-4:]] == [""] * 4


def test_unknown_model_or_suite_is_an_input_error(tmp_path, capsys):
    assert cli.main(["bench", "--models", "nonsense", "--report-only", "--out", str(tmp_path)]) == cli.EXIT_INPUT
    assert "nonsense" in capsys.readouterr().err
    assert cli.main(["bench", "--suite", "sped", "--out", str(tmp_path)]) == cli.EXIT_INPUT


# ---------------------------------------------------------------------- the quick run, end to end
def test_quick_bench_writes_the_report_with_peers_missing(tmp_path, monkeypatch, capsys):
    _hide_peers(monkeypatch)
    out, path = tmp_path / "results", tmp_path / "docs" / "benchmarks.md"
    path.parent.mkdir()
    path.write_text("# Benchmarks\n\n" + MD_SECTION)
    assert cli.main(["bench", "--quick", "--out", str(out), "--report", str(path)]) == 0
    text = path.read_text()
    for section in SECTIONS:
        assert section in text, section
    assert MD_SECTION in text and text.count(report.START) == 1
    # peers that cannot be imported are reported as skipped, and the run goes on without them
    for name in peers.names():
        row = next(line for line in text.splitlines() if f"`{name}`" in line)
        assert "skipped" in row
    speed = json.loads((out / "speed.json").read_text())
    assert {r["model"] for r in speed["results"]} == {"schnet", "leftnet"}
    assert all("train" in r and "infer" in r for r in speed["results"]), speed["results"]
    assert speed["environment"]["threads"] == 1 and speed["environment"]["cpu"]
    for figure in ("bench_speed.png", "bench_scaling.png"):
        assert (path.parent / "figures" / figure).stat().st_size > 0
    scaling = json.loads((out / "scaling.json").read_text())
    assert all(np.isfinite(p["time_s"]) for r in scaling["boxes"]["rows"] for p in r["points"])
    md = json.loads((out / "md.json").read_text())["systems"]["ethanol"]["rows"]
    ours = [r for r in md if r["engine"] == "localframe"]
    assert {(r["model"], r["replicas"]) for r in ours} == {(m, k) for m in ("schnet", "leftnet") for k in (0, 4)}
    assert all(r["steps_per_cpu_second"] > 0 and len(r["cpu_runs"]) == 1 for r in ours), ours
    assert all(r["vs_eager_cpu"] > 0 for r in ours if r["replicas"]), ours
    accuracy = out / "accuracy-md17.json"
    if accuracy.exists():  # needs tblite and lightning (the chem and train extras)
        rows = json.loads(accuracy.read_text())["tasks"]["md17"]["rows"]
        assert {r["model"] for r in rows} == {"schnet", "leftnet"} and all("test" in r for r in rows), rows
    # the report can be regenerated from the saved results alone
    assert cli.main(["bench", "--report-only", "--out", str(out), "--report", str(path)]) == 0
    assert path.read_text().count(report.START) == 1 and "## Speed" in path.read_text()


def test_md_ratios_are_paired_round_by_round_and_judged_against_the_goals():
    """Hand-built rounds: the engine runs 2 and 4 steps/s against xTB's 1 and 4 (paired ratios 2 and 1:
    median 1.5, while the ratio of medians would be 3/2.5 = 1.2), and replicas 30 and 40 against one eager
    trajectory's 2 and 4 (15 and 10: median 12.5)."""
    from localframe.bench import md_speed, verdicts

    def engine(model, compiled, replicas, runs, kind="localframe"):
        return {"model": model, "label": model, "engine": kind, "compiled": compiled, "replicas": replicas, "steps": 10,
                "runs": runs, "cpu_runs": runs}

    engines = [engine("m", False, 0, [2.0, 4.0]), engine("m", True, 0, [5.0, 12.0]), engine("m", False, 8, [30.0, 40.0]),
               engine("gfn2-xtb", False, 0, [1.0, 4.0], kind="GFN2-xTB"),
               {**engine("m", True, 8, []), "failure": "RuntimeError: not served"}]
    rows = [md_speed._md_row(e, engines) for e in engines]
    eager, fixed, replicas, xtb, failed = rows
    assert eager["vs_xtb_cpu"] == pytest.approx(1.5) and "vs_eager_cpu" not in eager
    assert fixed["vs_xtb_cpu"] == pytest.approx(4.0) and fixed["vs_eager_cpu"] == pytest.approx(2.75)
    assert replicas["vs_eager_cpu"] == pytest.approx(12.5) and replicas["steps_per_cpu_second"] == pytest.approx(35.0)
    assert "vs_xtb_cpu" not in xtb and failed["failure"].startswith("RuntimeError")
    results = {"md": {"settings": {"replicas": 8}, "systems": {"ethanol": {"atoms": 9, "rows": rows}}}}
    single = verdicts._md_versus_xtb(results, ("m", "M"), "ethanol", 3.0)
    assert single["verdict"] == "met" and "compiled 4.00×" in single["measured"]  # the faster engine counts
    assert verdicts._md_versus_xtb(results, ("m", "M"), "ethanol", 5.0)["verdict"] == "missed"
    many = verdicts._replica_speedup(results, ("m", "M"), ("ethanol", "aspirin"), 20.0)
    assert many["verdict"] == "missed" and "8 replicas eager 12.50×" in many["measured"]
    assert verdicts._replica_speedup(results, ("m", "M"), ("ethanol",), 12.0)["verdict"] == "met"
    assert verdicts._md_versus_xtb({}, ("m", "M"), "ethanol", 3.0) is None


def test_md_suite_times_a_trained_model_file_as_trained(tmp_path, capsys):
    """A model file is a model of the run under its path, with its own weights (no energy scaling);
    suites that train from scratch refuse it with a one-line error."""
    from localframe import models
    from localframe.bench import common, md_speed
    from localframe.io import save_model

    torch.manual_seed(0)
    path = str(save_model(models.create("schnet", hidden_channels=16, num_layers=2), tmp_path / "model.pt"))
    assert common.is_model_file(path) and common.label(path) == path
    built = common.build(path)
    assert float(built.energy_head.scale) == 1.0
    result = md_speed.run([path], systems=("ethanol",), replicas=2, rounds=1, seconds=0.05, compiled=False, xtb=False,
                          log=lambda message: None)
    rows = result["systems"]["ethanol"]["rows"]
    assert [(r["model"], r["replicas"]) for r in rows] == [(path, 0), (path, 2)] and all("failure" not in r for r in rows)
    assert cli.main(["bench", "--suite", "accuracy", "--models", path, "--out", str(tmp_path / "b")]) == cli.EXIT_INPUT
    assert "train models from scratch" in capsys.readouterr().err


def test_md_section_names_the_device_of_the_models(tmp_path):
    settings = {"ensemble": "nvt", "temperature_K": 300.0, "timestep_fs": 0.5, "replicas": 64, "rounds": 5,
                "seconds": 2.0, "device": "cuda:0", "models": ["schnet"], "systems": ["ethanol"], "compiled": True}
    row = {"model": "schnet", "label": "localframe schnet", "engine": "localframe", "compiled": False, "replicas": 0,
           "steps": 10, "runs": [5.0], "cpu_runs": [5.0], "steps_per_second": 5.0, "steps_per_cpu_second": 5.0}
    results = {"md": {"environment": {"cpu": "x", "versions": {}}, "settings": settings,
                      "systems": {"ethanol": {"atoms": 9, "rows": [row]}}}}
    text = "\n".join(report._md(results, tmp_path / "report.md") + report._setup(results, None))
    assert "Models on **cuda:0** (GFN2-xTB on the CPU)" in text and "the md suite's models on cuda:0" in text
    assert "no GPU used" not in text and (tmp_path / "figures" / "bench_md.png").stat().st_size > 0


def test_own_trainer_notes_state_only_the_timing_a_program_reports():
    common = {"package": "pkg", "version": "1.0", "recipe": "its README", "settings": {"ema": True, "lr": 0.01},
              "epochs": 3, "wall_s": 600.0, "model_tested": "best"}
    rows = [{"model": "a-own", "trainer": {**common, "program": "a_train", "first_call_s": 302.0, "epoch_s": 245.0,
                                           "stage_two_from": 2}},
            {"model": "b-own", "trainer": {**common, "program": "b-train"}}]
    lines = [line for line in report._own_trainers(rows) if line.startswith("- ")]
    assert len(lines) == 2
    assert "(first call 302.0 s, epoch 245.0 s, stage two from epoch 2 of the second call)" in lines[0]
    assert "settings `ema=True, lr=0.01`" in lines[1]
    assert "None" not in lines[1] and "first call" not in lines[1]
