r"""i-PI (path-integral MD, replica exchange, ...) driven by a localframe model through ASE's socket client.

    # terminal 1: i-pi input.xml        (an <ffsocket mode='unix'><address>localframe</address></ffsocket>)
    # terminal 2:
    from localframe import Calculator
    from localframe.interop.ipi import serve
    serve(ase.io.read("init.xyz"), Calculator("model.pt"), unixsocket="localframe")

i-PI sends positions and the cell (Bohr, converted by ASE to Å), the client answers with the energy,
the forces and the virial W = −σ V. :func:`serve` is ``ase.calculators.socketio.SocketClient`` with
one change: for a structure periodic in all three directions it asks the calculator for energy,
forces and stress in one call (ASE's client asks for the stress separately, which costs a second
model evaluation per step). ``atoms`` gives the atomic numbers and the periodic directions; a
molecule (no periodic direction) ignores the cell i-PI sends.
"""

from __future__ import annotations

from ase import Atoms
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes

__all__ = ["serve", "OneCall"]


class OneCall(_AseCalculator):
    """An ASE calculator that evaluates energy, forces and (fully periodic) stress of ``inner`` in one call."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wanted = ["energy", "forces"] + (["stress"] if self.atoms.pbc.all() else [])
        self.inner.calculate(self.atoms, wanted, all_changes)
        self.results = {key: self.inner.results[key] for key in ("energy", "free_energy", "forces", "stress")
                        if key in self.inner.results}
        self.calls += 1


def serve(atoms: Atoms, calculator, unixsocket: str | None = None, host: str = "localhost", port: int | None = None,
          timeout: float | None = None) -> OneCall:
    """Answer i-PI's force requests for ``atoms`` with ``calculator`` until i-PI ends the run.

    ``unixsocket`` (the ``<address>`` of an ``ffsocket mode='unix'``) or ``host``/``port``
    (``mode='inet'``). Returns the calculator wrapper (its ``calls`` counts the evaluations)."""
    from ase.calculators.socketio import SocketClient

    atoms = atoms.copy()
    atoms.calc = OneCall(calculator)
    client = SocketClient(host=host, port=port, unixsocket=unixsocket, timeout=timeout)
    client.run(atoms, use_stress=bool(atoms.pbc.all()))
    return atoms.calc
