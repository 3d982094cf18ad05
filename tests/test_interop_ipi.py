"""i-PI through ASE's socket client: i-PI's potential energy is the calculator's, a short NVT run completes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.build import bulk

from localframe.calculator import Calculator
from localframe.interop.ipi import serve

pytest.importorskip("ipi", reason="i-PI not installed (pip install 'localframe[ipi]')")

INPUT = """<simulation verbosity='low' safe_stride='1000'>
  <output prefix='sim'>
    <properties stride='1' filename='out' flush='1'> [ step, potential{{electronvolt}}, pressure_md{{pascal}} ] </properties>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 31415 </seed></prng>
  <ffsocket name='localframe' mode='unix' pbc='false'><address> {address} </address></ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='xyz' units='angstrom'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='localframe'/></forces>
    <ensemble><temperature units='kelvin'> 300 </temperature></ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 0.25 </timestep>
        <thermostat mode='langevin'><tau units='femtosecond'> 100 </tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


def _run_ipi(tmp_path, atoms, calculator, steps=4):
    """Run i-PI on ``atoms`` served by ``calculator``; the columns of its property file."""
    address = f"lf{os.getpid()}"
    cell = atoms.cell.cellpar() if atoms.pbc.all() else [30.0, 30.0, 30.0, 90.0, 90.0, 90.0]
    with open(tmp_path / "init.xyz", "w") as fh:
        fh.write(f"{len(atoms)}\n# CELL(abcABC): {' '.join(f'{v:.10f}' for v in cell)} cell{{angstrom}} positions{{angstrom}}\n")
        for symbol, position in zip(atoms.get_chemical_symbols(), atoms.positions):
            fh.write(f"{symbol} {position[0]:.12f} {position[1]:.12f} {position[2]:.12f}\n")
    (tmp_path / "input.xml").write_text(INPUT.format(steps=steps, address=address))
    ipi = shutil.which("i-pi") or os.path.join(os.path.dirname(sys.executable), "i-pi")
    server = subprocess.Popen([ipi, "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        socket_file = f"/tmp/ipi_{address}"
        for _ in range(600):
            if os.path.exists(socket_file) or server.poll() is not None:
                break
            time.sleep(0.05)
        assert server.poll() is None, server.stdout.read()[-2000:]
        wrapper = serve(atoms, calculator, unixsocket=address, timeout=60)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    return np.loadtxt(tmp_path / "sim.out", ndmin=2), wrapper


@pytest.mark.parametrize("kind", ["molecule", "periodic box"])
def test_ipi_potential_equals_the_calculator(lf, tmp_path, kind, one_thread):
    model = lf.build_model("schnet")
    if kind == "molecule":
        atoms = lf.ethanol()
    else:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.numbers[::3] = 6
        atoms.rattle(0.05, seed=2)
    table, wrapper = _run_ipi(tmp_path, atoms, Calculator(model, dtype="float64"))
    atoms.calc = Calculator(model, dtype="float64")
    assert table.shape[0] == 5 and np.isfinite(table).all()  # steps 0..4
    assert table[0, 1] == pytest.approx(atoms.get_potential_energy(), abs=1e-5)  # eV; i-PI prints 8 digits
    assert wrapper.calls == 5  # one model evaluation per step, also with the stress
