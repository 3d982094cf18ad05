r"""Export a localframe model to one metatomic TorchScript file.

    from localframe.interop.metatomic import export_metatomic
    export_metatomic(model, "model.pt", dtype="float64")

    # anywhere, without localframe installed:
    from metatomic_ase import MetatomicCalculator
    atoms.calc = MetatomicCalculator("model.pt")

Every localframe model fails ``torch.jit.script`` (Python-only constructs in the bodies), so the
export *traces* the tensor core

    core(numbers (N,), edge_index (2, E), vectors (E, 3), batch (N,)) -> energy (1,) eV

of one structure (representation plus energy head, on a small example built here) and *scripts* a
thin metatomic wrapper around it. The engine supplies a full neighbour list with the model's cutoff
(metatomic's convention r_ij = x_j − x_i + S·cell is ours); the wrapper reads the pairs and their
vectors from it and calls the core once per system. The engine gets forces F = −∂E/∂x and the
stress σ = (1/V) ∂E/∂ε by autograd through the vectors, exactly as :class:`localframe.Calculator`
does through the model.

A trace freezes control flow, dtype and device: the file runs in the dtype it was exported in, on
the CPU, and ``tests/test_interop_metatomic.py`` checks it against the calculator on structures of
other sizes than the tracing example (molecules and periodic boxes) for every model.
Energy only (no dipole or scalar targets); per-atom energies are not offered.
"""

# No "from __future__ import annotations": TorchScript and metatomic read the annotations as objects.

import contextlib
import copy
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from ase import Atoms

from localframe.data.batch import AtomsBatch
from localframe.dtypes import torch_dtype
from localframe.errors import InputError
from localframe.io import known_elements, load_model
from localframe.nn import lse

__all__ = ["export_metatomic", "EnergyCore", "trace_core"]


class EnergyCore(torch.nn.Module):
    """The energy of one structure from its pairs: representation plus energy head (traceable)."""

    def __init__(self, model):
        super().__init__()
        self.representation = model.representation
        self.energy_head = model.energy_head

    def forward(self, numbers, edge_index, vectors, batch):
        scalars, _ = self.representation(numbers, edge_index, vectors, batch, 1)
        return self.energy_head(scalars, numbers, batch, 1)


def _example(elements: tuple[int, ...], cutoff: float, dtype: torch.dtype) -> AtomsBatch:
    """A small rattled cluster using the given elements, every atom with several neighbours."""
    rng = np.random.default_rng(7)
    n = max(6, len(elements) + 2)
    numbers = [elements[k % len(elements)] for k in range(n)]
    positions = rng.uniform(0.0, 1.0, size=(n, 3)) * min(3.0, 0.8 * cutoff)
    positions += 0.6 * np.arange(n)[:, None] * np.array([0.3, 0.2, 0.1])
    return AtomsBatch.from_atoms(Atoms(numbers=numbers, positions=positions), cutoff=cutoff, dtype=dtype)


@contextlib.contextmanager
def _one_chunk():
    """Evaluate edges in one chunk while tracing: the local substructure encoding loops over chunks of
    edges (:data:`localframe.nn.lse.CHUNK_ELEMENTS`) and would otherwise be traced with the example's
    chunk count."""
    saved = lse.CHUNK_ELEMENTS
    lse.CHUNK_ELEMENTS = 2**62
    try:
        yield
    finally:
        lse.CHUNK_ELEMENTS = saved


def trace_core(model, elements: tuple[int, ...], dtype: torch.dtype) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of :class:`EnergyCore` on a small example, in ``dtype`` on the CPU, checked
    against the eager core (energy and forces) on a larger periodic structure; a mismatch raises
    :class:`InputError` (control flow the trace froze)."""
    core = EnergyCore(copy.deepcopy(model)).to(dtype=dtype, device="cpu").eval()
    for p in core.parameters():
        p.requires_grad_(False)
    example = _example(elements, model.cutoff, dtype)
    inputs = (example.numbers, example.edge_index, example.edge_vectors(), example.batch)
    with torch.no_grad(), _one_chunk():
        traced = torch.jit.trace(core, inputs, check_trace=False)
    _check_trace(core, traced, elements, model.cutoff, dtype)
    return traced


def _check_trace(core, traced, elements, cutoff: float, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(11)
    side = 2.0 * cutoff + 1.0
    n = 48
    numbers = [elements[k % len(elements)] for k in range(n)]
    atoms = Atoms(numbers=numbers, positions=rng.uniform(0, side, (n, 3)), cell=[side] * 3, pbc=True)
    batch = AtomsBatch.from_atoms(atoms, cutoff=cutoff, dtype=dtype)
    results = []
    for fn in (core, traced):
        positions = batch.positions.clone().requires_grad_(True)
        try:
            energy = fn(batch.numbers, batch.edge_index, batch.edge_vectors(positions), batch.batch)
        except RuntimeError as err:
            raise InputError(
                f"the traced {type(core.representation).__name__} fails on a {n}-atom periodic check "
                f"(control flow the trace froze): {str(err).splitlines()[-1]}"
            ) from err
        results.append((energy.detach(), torch.autograd.grad(energy.sum(), positions)[0]))
    (e0, f0), (e1, f1) = results
    tol = 1e-8 if dtype == torch.float64 else 1e-3
    scale = 1.0 + float(e0.abs().max())
    if not (torch.allclose(e0, e1, rtol=0, atol=tol * scale) and torch.allclose(f0, f1, rtol=0, atol=tol * (1 + float(f0.abs().max())))):
        raise InputError(
            f"the traced {type(core.representation).__name__} does not reproduce the model on a "
            f"{n}-atom periodic check ({int(batch.edge_index.shape[1])} pairs): control flow depends on the size"
        )


try:  # optional: only the export needs them
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import ModelOutput, NeighborListOptions, System

    HAVE_METATOMIC = True
except ImportError:  # pragma: no cover - exercised where metatomic is absent
    HAVE_METATOMIC = False


if HAVE_METATOMIC:


    class LocalframeMetatomic(torch.nn.Module):
        """metatomic interface over a traced localframe energy core."""

        def __init__(self, core: torch.jit.ScriptModule, cutoff: float):
            super().__init__()
            self.core = core
            self.options = NeighborListOptions(cutoff=cutoff, full_list=True, strict=True)

        def requested_neighbor_lists(self) -> List[NeighborListOptions]:
            return [self.options]

        def forward(
            self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels] = None
        ) -> Dict[str, TensorMap]:
            if "energy" not in outputs:
                return {}
            if outputs["energy"].per_atom:
                raise ValueError("this localframe export gives total energies only (per_atom=False)")
            if selected_atoms is not None:
                raise ValueError("this localframe export does not support selected_atoms")
            energies: List[torch.Tensor] = []
            for system in systems:
                pairs = system.get_neighbor_list(self.options)
                edge_index = pairs.samples.values[:, :2].T.to(torch.long).contiguous()
                vectors = pairs.values.reshape(-1, 3)
                numbers = system.types.to(torch.long)
                batch = torch.zeros_like(numbers)
                energies.append(self.core(numbers, edge_index, vectors, batch).reshape(1))
            if len(energies) > 0:
                energy = torch.cat(energies).reshape(-1, 1)
            else:
                energy = torch.zeros((0, 1), dtype=torch.float64)
            device = energy.device
            block = TensorBlock(
                values=energy,
                samples=Labels("system", torch.arange(len(systems), device=device).reshape(-1, 1)),
                components=[],
                properties=Labels("energy", torch.tensor([[0]], device=device)),
            )
            return {"energy": TensorMap(Labels("_", torch.tensor([[0]], device=device)), [block])}




def export_metatomic(
    model_or_path, path: str | os.PathLike, dtype: str = "float64", elements: tuple[int, ...] | None = None,
    name: str | None = None,
) -> Path:
    """Write ``model_or_path`` (a model or a model file) as a metatomic TorchScript file at ``path``.

    ``elements``: the atomic numbers the export accepts; default: the elements the model was
    trained on (required when the model does not record them). Returns the path written.
    """
    if not HAVE_METATOMIC:
        raise InputError("the metatomic export needs metatomic-torch: pip install 'localframe[metatomic]'")
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata
    model = load_model(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    torch_type = torch_dtype(dtype)
    if torch_type not in (torch.float32, torch.float64):
        raise InputError(f"metatomic export dtype must be float32 or float64, got {dtype}")
    elements = tuple(int(z) for z in (elements or known_elements(model) or ()))
    if not elements:
        raise InputError("the model does not record its elements: pass elements=(1, 6, ...) (--elements)")
    core = trace_core(model, elements, torch_type)
    wrapper = LocalframeMetatomic(core, float(model.cutoff)).eval()
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(quantity="energy", unit="eV", per_atom=False)},
        atomic_types=list(elements),
        interaction_range=float(model.cutoff),
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64" if torch_type == torch.float64 else "float32",
    )
    metadata = ModelMetadata(
        name=name or f"localframe {model.name}",
        description=f"localframe {model.name} model (traced energy core, cutoff {model.cutoff} Å)",
    )
    exported = AtomisticModel(wrapper, metadata, capabilities)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    exported.save(str(tmp))
    os.replace(tmp, path)
    return path
