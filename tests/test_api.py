"""The package namespace: subpackages load on first use, and ``import localframe`` stays light."""

import os
import subprocess
import sys

SCRIPT = """
import sys
import localframe
heavy = sorted(m for m in ("torch", "lightning", "pytorch_lightning", "matplotlib", "pydantic", "rdkit", "tblite") if m in sys.modules)
assert not heavy, heavy
import localframe.reference.labelling  # what a labelling worker imports: no torch either
assert "torch" not in sys.modules
assert localframe.AtomsBatch.__name__ == "AtomsBatch"
assert "leftnet" in localframe.models.available()
assert localframe.models.create("schnet", hidden_channels=8, num_layers=1).cutoff > 0
assert localframe.train.config.RunConfig and localframe.md.run_md and localframe.data.AtomsBatch
assert "lightning" not in sys.modules  # the config schema does not need Lightning
assert {"models", "train", "md", "data", "io"} <= set(dir(localframe))
try:
    localframe.no_such_thing
except AttributeError as err:
    assert "no_such_thing" in str(err)
else:
    raise AssertionError("no AttributeError")
print("ok")
"""


def test_import_is_light_and_subpackages_load_lazily():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
