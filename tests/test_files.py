"""Atomic writes: complete or absent, with the permissions of an ordinary file."""

from __future__ import annotations

import os

import pytest

from localframe.files import atomic_open, write_text


def test_write_text_is_complete_and_has_the_usual_mode(tmp_path):
    path = write_text(tmp_path / "a.json", "{}\n")
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "{}\n"
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = write_text(tmp_path / "model.pt", "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as handle:
            handle.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
