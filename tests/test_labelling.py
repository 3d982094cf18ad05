"""Labelling that survives: appended frames, resume after SIGKILL, workers, Dask, plain progress lines."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")

import ase.io  # noqa: E402

try:
    import psutil
except ImportError:
    psutil = None

from localframe.errors import InputError  # noqa: E402
from localframe.reference import label_file, labelling, sample, xtb  # noqa: E402
from localframe.reference.extxyz_frames import FrameAppender, split_frames  # noqa: E402
from localframe.reference.xtb import embed_smiles, partial_path  # noqa: E402

PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def rattled_copies(n: int, seed: int = 0):
    atoms, _, _ = embed_smiles(PARACETAMOL, seed)
    copies = []
    for k in range(n):
        a = atoms.copy()
        a.rattle(0.03, seed=seed + k)
        copies.append(a)
    return copies


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    """24 rattled paracetamol structures in a file, and their serial, uninterrupted labelling."""
    folder = tmp_path_factory.mktemp("labelling")
    source = folder / "in.extxyz"
    ase.io.write(source, rattled_copies(24), format="extxyz")
    reference = folder / "reference.extxyz"
    label_file(source, reference, progress=False)
    return source, reference


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "localframe.cli", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def worker_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (none known without psutil, which comes with the distributed extra)."""
    if psutil is None:
        return []
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def frame_count(path) -> int:
    return len(split_frames(path.read_bytes())[0]) if path.exists() else 0


def assert_same_labels(path, reference) -> None:
    """Same structures, in input order, each once, energies and forces to float precision."""
    got, want = ase.io.read(path, ":"), ase.io.read(reference, ":")
    assert [a.info["source_index"] for a in got] == list(range(len(want)))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-8)


# ---------------------------------------------------------------------- frames on disk
def test_split_frames_keeps_whole_frames_and_cuts_the_rest(tmp_path, structures):
    _, reference = structures
    data = reference.read_bytes()
    frames, end = split_frames(data)
    assert len(frames) == 24 and end == len(data)
    cut = len(frames[0]) + len(frames[1]) // 2
    assert split_frames(data[:cut]) == ([frames[0]], len(frames[0]))
    path = tmp_path / "log.extxyz"
    path.write_bytes(data[:cut])
    with FrameAppender(path, keep=len(frames[0])) as log:
        log.append([frames[1].decode()])
    assert path.read_bytes() == frames[0] + frames[1]
    with pytest.raises(ValueError, match="atom count"):
        split_frames(b"hello\nworld\n")


# ---------------------------------------------------------------------- resume
def test_killed_label_run_resumes_to_the_same_file(tmp_path):
    """Killed with two workers (frames out of order on disk), resumed with one: the uninterrupted file."""
    source, out = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    n = 64
    ase.io.write(source, rattled_copies(n, seed=1), format="extxyz")
    run = cli("label", str(source), str(out), "--quiet", "--workers", "2")
    deadline = time.monotonic() + 120
    while frame_count(out) < 16 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = worker_pids(run.pid)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    written = frame_count(out)
    assert 0 < written < n, f"the kill came too late or too early ({written} of {n} frames)"
    deadline = time.monotonic() + 10  # the workers notice that their parent is gone
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]

    rerun = cli("label", str(source), str(out))
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{written} of {n} structures already labelled" in err
    rest = n - written
    assert "\r" not in err and err.splitlines()[-1].startswith(f"GFN2-xTB labels: {rest}/{rest} structures in ")

    reference = tmp_path / "reference.extxyz"
    label_file(source, reference, progress=False)
    assert_same_labels(out, reference)
    assert out.read_bytes() == reference.read_bytes()


def test_resume_after_out_of_order_frames_and_a_torn_tail(tmp_path, structures, monkeypatch):
    source, reference = structures
    frames, _ = split_frames(reference.read_bytes())
    out = tmp_path / "out.extxyz"
    # as a parallel run leaves it: structures 5, 0 and 7 done, then half of structure 2 when killed
    out.write_bytes(frames[5] + frames[0] + frames[7] + frames[2][: len(frames[2]) // 2])
    labelled = []
    original = labelling._label_chunk

    def counting(items, **kwargs):
        labelled.extend(index for index, _ in items)
        return original(items, **kwargs)

    monkeypatch.setattr(labelling, "_label_chunk", counting)
    result = label_file(source, out, progress=False)
    assert sorted(labelled) == [i for i in range(24) if i not in (0, 5, 7)]
    assert out.read_bytes() == reference.read_bytes()
    assert [a.info["source_index"] for a in result] == list(range(24))
    assert all(a.calc is None and np.isfinite(a.info["energy"]) for a in result)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    labelled.clear()  # a finished output: nothing to do, nothing changes
    label_file(source, out, progress=False)
    assert labelled == [] and out.read_bytes() == reference.read_bytes()


def test_output_of_another_input_or_method_is_refused(tmp_path, structures):
    source, reference = structures
    frames, _ = split_frames(reference.read_bytes())
    out = tmp_path / "out.extxyz"

    def refused(data: bytes, match: str, **kwargs) -> None:
        out.write_bytes(data)
        with pytest.raises(InputError, match=match) as err:
            label_file(source, out, progress=False, **kwargs)
        assert "\n" not in str(err.value) and str(out) in str(err.value)
        assert out.read_bytes() == data  # left as it was

    moved = ase.io.read(source, ":")
    moved[3].positions[0, 0] += 0.01
    other = tmp_path / "other.extxyz"
    ase.io.write(other, moved, format="extxyz")
    out.write_bytes(frames[3])
    with pytest.raises(InputError, match="frame 0 .structure 3. has other atoms, positions or cell"):
        label_file(other, out, progress=False)

    fewer = tmp_path / "fewer.extxyz"
    ase.io.write(fewer, moved[:3], format="extxyz")
    out.write_bytes(frames[3])
    with pytest.raises(InputError, match="is structure 3, but the input has 3 structures"):
        label_file(fewer, out, progress=False)

    refused(frames[0], "was labelled with GFN2-xTB", method="GFN1-xTB")
    refused(frames[0], "has total charge 0, not 1", charge=1)
    refused(frames[0] + frames[0], "repeats structure 0")
    plain = tmp_path / "plain.extxyz"
    ase.io.write(plain, moved[:1], format="extxyz")
    refused(plain.read_bytes(), "has no source_index")
    refused(b"not\nan extxyz file\n", "is not an extended-XYZ file of labels")


# ---------------------------------------------------------------------- parallel
def test_two_workers_give_the_serial_result(tmp_path, structures):
    source, reference = structures
    out = tmp_path / "out.extxyz"
    result = label_file(source, out, progress=False, workers=2)
    assert out.read_bytes() == reference.read_bytes()
    assert len(result) == 24
    with pytest.raises(InputError, match="workers must be a positive integer"):
        label_file(source, tmp_path / "x.extxyz", progress=False, workers=0)


def test_dask_local_cluster_gives_the_serial_result(tmp_path, structures):
    distributed = pytest.importorskip("distributed")
    source, reference = structures
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        label_file(source, tmp_path / "client.extxyz", progress=False, client=client)
        # an address, as `localframe label IN OUT --scheduler tcp://host:8786` passes it
        label_file(source, tmp_path / "address.extxyz", progress=False, client=cluster.scheduler_address)
    assert (tmp_path / "client.extxyz").read_bytes() == reference.read_bytes()
    assert (tmp_path / "address.extxyz").read_bytes() == reference.read_bytes()


# ---------------------------------------------------------------------- progress and sampling
def test_progress_off_a_terminal_is_plain_lines(tmp_path, structures, capsys, monkeypatch):
    from localframe import progress

    source, _ = structures
    every_advance = partial(progress.progress, interval=0.0)  # the default is a line every 30 s
    monkeypatch.setattr(labelling, "progress_bar", every_advance)
    monkeypatch.setattr(xtb, "progress_bar", every_advance)
    label_file(source, tmp_path / "out.extxyz")
    sample("CCO", tmp_path / "md.extxyz", frames=3, interval=2, equilibration=0.0)
    err = capsys.readouterr().err  # standard error is not a terminal here
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    labels = [line for line in lines if line.startswith("GFN2-xTB labels: ")]
    assert len(labels) > 2 and "/24 structures (" in labels[0]
    assert labels[-1].startswith("GFN2-xTB labels: 24/24 structures in ")
    md = [line for line in lines if line.startswith("GFN2-xTB MD: ")]
    assert len(md) > 2 and md[-1].startswith("GFN2-xTB MD: 6/6 steps in ")


def test_killed_sample_run_keeps_its_frames(tmp_path):
    out = tmp_path / "md.extxyz"
    partial = partial_path(out)
    assert partial.name == "md.partial.extxyz"
    run = cli("sample", "CCO", str(out), "--frames", "2000", "--interval", "2", "--quiet")
    deadline = time.monotonic() + 120
    while frame_count(partial) < 3 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert not out.exists()  # the output exists only when complete
    # a kill can land inside a write that straddles a page: whole frames, then at most the start of one
    whole, _ = split_frames(partial.read_bytes())
    kept = ase.io.read(io.StringIO(b"".join(whole).decode()), ":", format="extxyz")
    assert 3 <= len(kept) < 2000
    assert all(np.isfinite(a.get_potential_energy()) and a.get_forces().shape == (9, 3) for a in kept)
