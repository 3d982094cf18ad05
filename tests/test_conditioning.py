"""Conditioning near degenerate geometries, for every model and both parity settings (float64).

Local frames lose an axis at planar, linear and centrosymmetric sites. If that axis switches on
over a tiny length ε as the geometry leaves the symmetric point, the energy has curvature ~1/ε
there: a spurious stiffness that MD and relaxations feel (aromatic rings live in this regime).
Frames here switch on over a physical length (``frames.FRAME_EPS``), smooth norms and the even
map over O(1) feature scales (``frames.VECTOR_EPS``). The checks, at random weights:

* benzene: the out-of-plane stiffness k = −∂F_z/∂z of one hydrogen at and within 1 mÅ of the
  plane is at most 3× its largest value at 30–100 mÅ;
* CO₂: the bending curvature ∂²E/∂θ² at 10⁻³ rad is at most 3× its value at 0.05 rad.

The pathology is an excess of curvature (of either sign) at the symmetric point, so both checks
bound the near value from above; a smooth energy may well be flatter there than further out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.nn import frames

from test_physics import symmetry_configs

NEAR, FAR = (0.0, 1e-3), (0.03, 0.06, 0.1)  # Å out of the benzene plane
SEEDS = (0, 1)


def _outputs(model, atoms, forces=True):
    batch = AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=torch.float64)
    if forces:
        return model(batch)["forces"].detach().numpy()
    with torch.no_grad():
        return model(batch, forces=False)["energy"].item()


def out_of_plane_stiffness(model, delta: float, h: float = 2e-5) -> float:
    """−∂F_z/∂z of the first hydrogen of a planar benzene displaced by ``delta`` Å along z."""
    benzene = molecule("C6H6")
    assert np.abs(benzene.positions[:, 2]).max() < 1e-12
    k = benzene.get_chemical_symbols().index("H")
    fz = []
    for sign in (1.0, -1.0):
        atoms = benzene.copy()
        atoms.positions[k, 2] += delta + sign * h
        fz.append(_outputs(model, atoms)[k, 2])
    return -(fz[0] - fz[1]) / (2 * h)


def co2(theta: float) -> Atoms:
    """O=C=O bent symmetrically by ``theta`` rad, C = O 1.16 Å."""
    d, half = 1.16, theta / 2
    return Atoms("OCO", positions=[[-d * np.cos(half), d * np.sin(half), 0.0], [0.0, 0.0, 0.0],
                                   [d * np.cos(half), d * np.sin(half), 0.0]])


def bending_curvature(model, theta: float) -> float:
    h = theta / 5
    e = [_outputs(model, co2(theta + s * h), forces=False) for s in (1.0, 0.0, -1.0)]
    return (e[0] - 2 * e[1] + e[2]) / h**2


CASES = [(name, config) for name in models.available() for config in symmetry_configs(name)]
IDS = [f"{name}-{config.get('symmetry', 'default')}" for name, config in CASES]


@pytest.mark.parametrize("name,config", CASES, ids=IDS)
def test_benzene_out_of_plane_stiffness_is_not_spiked_at_the_plane(name, config, lf, one_thread):
    for seed in SEEDS:
        model = lf.build_model(name, seed=seed, **config)
        near = [abs(out_of_plane_stiffness(model, d)) for d in NEAR]
        far = max(abs(out_of_plane_stiffness(model, d)) for d in FAR)
        assert max(near) <= 3.0 * far, f"seed {seed}: |k| near the plane {near}, at 30–100 mÅ at most {far:.3g}"


@pytest.mark.parametrize("name,config", CASES, ids=IDS)
def test_co2_bending_curvature_is_regular_near_linear(name, config, lf, one_thread):
    for seed in SEEDS:
        model = lf.build_model(name, seed=seed, **config)
        near, far = bending_curvature(model, 1e-3), bending_curvature(model, 0.05)
        assert abs(far) > 0, "the energy must depend on the bend"
        assert abs(near) <= 3.0 * abs(far), f"seed {seed}: curvature {near:.3g} at 1e-3 rad, {far:.3g} at 0.05 rad"


def test_frame_axis_switches_on_over_the_frame_length():
    """|e₂| = q(l) = l/√(l² + ε²) for a reference at lever l from a long primary axis: 0 for a degenerate
    axis, 1/√2 at the frame length ε, unit well above it."""
    eps = frames.FRAME_EPS
    primary = torch.tensor([[100.0, 0.0, 0.0]], dtype=torch.float64)  # |e₁| = 1 − 4.5e-6
    for lever in (0.0, 0.1 * eps, eps, 30 * eps):
        reference = torch.tensor([[3.0, lever, 0.0]], dtype=torch.float64)
        e2 = frames.build_frame(primary, reference)[0, 1]
        assert abs(float(e2.norm()) - lever / np.sqrt(lever**2 + eps**2)) < 1e-4
