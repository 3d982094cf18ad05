r"""Guided sampling: inpainting around fixed atoms (RePaint, as DiffSBDD does) and the separation constraint.

**Inpainting.** A fragment of M atoms (positions y, elements, charges) is kept and the model adds
atoms around it. The state lives in the zero-centre-of-mass subspace of all N atoms of a molecule;
the fragment enters it centred on its own mean, y_c = y − ȳ. At every reverse step t → s:

1. the process's own step (``process.step``, the one :meth:`Process.sample` runs) gives the state
   z_s of all atoms;
2. the fixed atoms are replaced by the *known* state at s, k_s (below), translated so that its mean
   equals the mean of the same atoms in z_s: k_s ← k_s − k̄_s + x̄_fixed(z_s). The molecule's centre
   of mass stays zero, and the fragment's own frame (its orientation) is kept (DiffSBDD aligns the
   two parts the same way before combining them);
3. the separation projection, when asked for (below);
4. with ``resample`` r > 1 (RePaint), 1–3 are repeated r times, the state re-noised from s back to t
   with the forward kernel q(z_t | z_s) between repetitions, so the free atoms harmonise with the
   fixed ones.

At the end the fixed atoms get their input coordinates y (exactly, float64) and the free atoms the
same translation, x_free − x̄_fixed + ȳ: the output is in the fragment's frame.

Known states and re-noising kernels:

- **EDM** (time 1 → 0): k_s = α_s [y_c, h] + σ_s ε with a fresh ε at every step (RePaint);
  re-noising z_t = α_{t|s} z_s + σ_{t|s} ε (ε centred for positions).
- **Flow matching** (time 0 → 1): the fixed atoms follow one interpolation path
  x_t = (1 − t) x_0 + t y_c, with x_0 ~ N(0, I) drawn once per fixed atom and kept, and
  c_t = c_1 where u < t else c_0, with u ~ U(0, 1) and a uniform c_0 drawn once: a path of the
  kind training sees, without jitter between steps. Re-noising from t' back to t < t':
  x_t = (t/t') x_{t'} + √((1 − t)² − (t (1 − t')/t')²) ε, a category kept with probability t/t'
  else redrawn uniformly; both keep the path's marginals (x_t = t x_1 + (1 − t) ε, c_t = c_1 w.p. t).

**Separation** (``separation=True``): after every step the state is projected
(:func:`localframe.generate.separation.project`) so that no pair is closer than λ_s d_min, the
bonded minimum scaled by the signal coefficient of the state (α_s in EDM, s in flow matching),
fixed atoms held, then re-centred; the final molecule is projected with the full d_min.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from localframe.errors import InputError
from localframe.generate.molecule import Molecule
from localframe.generate.process import centred_noise, rand, randint, randn, remove_mean, size_batch
from localframe.generate.schedule import alpha_sigma
from localframe.generate.denoiser import pair_index
from localframe.generate.separation import bonded_minimum, project
from localframe.nn.scatter import gather, scatter_mean


class EDMSteps:
    """What inpainting adds to the steps of :class:`~localframe.generate.edm.EDM` (state {x, h}): the
    signal coefficient, the known state of the fixed atoms, the re-noising kernel."""

    fresh_noise = True

    def __init__(self, process):
        self.p = process

    def signal(self, t):
        return alpha_sigma(t)[0]

    def renoise(self, state, s, t, b, n, generator):
        (a_t, sig_t), (a_s, sig_s) = alpha_sigma(t), alpha_sigma(s)
        a_ts = a_t / a_s
        std = (sig_t**2 - a_ts**2 * sig_s**2).clamp(min=0).sqrt()
        x, h = state["x"], state["h"]
        return {"x": a_ts * x + std * centred_noise(x.shape, b, n, generator, x.dtype),
                "h": a_ts * h + std * randn(h.shape, generator, h.dtype, h.device)}

    def path_noise(self, clean, generator):
        m, dtype, d = len(clean["x"]), clean["x"].dtype, clean["x"].device
        return {"x": randn((m, 3), generator, dtype, d), "h": randn((m, self.p.n_features), generator, dtype, d)}

    def known(self, clean, t, noise):
        from localframe.generate.edm import FEATURE_SCALE

        a, s = alpha_sigma(t)
        h = FEATURE_SCALE * torch.cat([F.one_hot(clean["types"], len(self.p.elements)),
                                       F.one_hot(clean["charges"], len(self.p.charges))], -1).to(clean["x"].dtype)
        return {"x": a * clean["x"] + s * noise["x"], "h": a * h + s * noise["h"]}

    def types(self, state):
        return state["h"][:, :len(self.p.elements)].argmax(-1)


class FlowSteps:
    """What inpainting adds to the steps of :class:`~localframe.generate.flow.FlowMatching` (state {x,
    types, charges[, bonds]}): the signal coefficient, the known state, the re-noising kernel."""

    fresh_noise = False

    def __init__(self, process):
        self.p = process

    def signal(self, t):
        return t

    def renoise(self, state, t_next, t, b, n, generator):
        keep = t / t_next
        std = ((1 - t) ** 2 - (keep * (1 - t_next)) ** 2).clamp(min=0).sqrt()
        x = state["x"]
        out = {"x": keep * x + std * centred_noise(x.shape, b, n, generator, x.dtype)}
        for key, k in (("types", len(self.p.elements)), ("charges", len(self.p.charges))):
            u = rand(len(b), generator, x.dtype, x.device)
            out[key] = torch.where(u < keep, state[key], randint(k, (len(b),), generator, x.device))
        if self.p.bonds:
            u = rand(len(state["bonds"]), generator, x.dtype, x.device)
            out["bonds"] = torch.where(u < keep, state["bonds"], self.p._prior_draw(len(u), generator))
        return out

    def path_noise(self, clean, generator):
        m, dtype, d = len(clean["x"]), clean["x"].dtype, clean["x"].device
        noise = {"x": randn((m, 3), generator, dtype, d),
                 "u": rand((m, 2), generator, dtype, d),
                 "types": randint(len(self.p.elements), (m,), generator, d),
                 "charges": randint(len(self.p.charges), (m,), generator, d)}
        if "bonds" in clean:
            p = len(clean["bonds"])
            noise["u_bonds"] = rand(p, generator, dtype, d)
            noise["bonds"] = self.p._prior_draw(p, generator)
        return noise

    def known(self, clean, t, noise):
        out = {"x": (1 - t) * noise["x"] + t * clean["x"],
               "types": torch.where(noise["u"][:, 0] < t, clean["types"], noise["types"]),
               "charges": torch.where(noise["u"][:, 1] < t, clean["charges"], noise["charges"])}
        if "bonds" in clean:
            out["bonds"] = torch.where(noise["u_bonds"] < t, clean["bonds"], noise["bonds"])
        return out

    def types(self, state):
        return state["types"]


STEPPERS = {"edm": EDMSteps, "flow": FlowSteps}


@dataclass
class Fragment:
    """Atoms kept fixed: atomic numbers, positions (Å, any frame), formal charges, bonds (i, j, order) or
    None (then, for a model that generates bonds, EDM's distance table); ``source`` names the file."""

    numbers: np.ndarray
    positions: np.ndarray
    charges: np.ndarray
    source: str | None = None
    bonds: np.ndarray | None = None

    def pair_orders(self) -> torch.Tensor:
        """Bond order of every pair i < j of the fragment, in :func:`pair_index` order (0: none)."""
        from localframe.generate.tables import distance_bonds

        bonds = self.bonds if self.bonds is not None else distance_bonds(self.numbers, self.positions)
        table = np.zeros((len(self), len(self)), np.int64)
        for i, j, order in bonds:
            table[i, j] = table[j, i] = order
        i, j = np.triu_indices(len(self), k=1)
        return torch.as_tensor(table[i, j], device="cpu")

    def __len__(self) -> int:
        return len(self.numbers)


def read_fragment(path) -> Fragment:
    """The one molecule of an SDF file (charges kept) or an XYZ file (charges 0)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    suffix = path.suffix.lower()
    if suffix == ".sdf":
        from localframe.generate.molecule import read_sdf

        molecules = read_sdf(path)
        if len(molecules) != 1:
            raise InputError(f"a fragment is one molecule, the file has {len(molecules)}", str(path))
        mol = molecules[0]
        if mol.failed:
            raise InputError(f"the record is a failed sample ({mol.failed}), not a molecule", str(path))
        return Fragment(mol.numbers, mol.positions, mol.charges, str(path), mol.bonds)
    if suffix == ".xyz":
        import ase.io

        try:
            atoms = ase.io.read(path, index=":", format="xyz")
        except Exception as err:  # ase raises several types for a malformed file
            raise InputError(f"not a readable XYZ file ({' '.join(str(err).split()) or type(err).__name__})", str(path)) from None
        if len(atoms) != 1:
            raise InputError(f"a fragment is one molecule, the file has {len(atoms)} frames", str(path))
        return Fragment(atoms[0].numbers, atoms[0].positions, np.zeros(len(atoms[0]), np.int64), str(path))
    raise InputError(f"a fragment file is .sdf or .xyz, not {suffix or 'without a suffix'!r}", str(path))


def check_fragment(process, fragment: Fragment) -> None:
    """One-line errors for a fragment the model cannot take."""
    from ase.data import chemical_symbols

    if len(fragment) == 0:
        raise InputError("the fragment has no atoms", fragment.source)
    unknown = sorted(set(int(z) for z in fragment.numbers) - set(process.elements))
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in process.elements)
        raise InputError(f"fragment element(s) {names} not among the model's atom types ({known})", fragment.source)
    charges = sorted(set(int(q) for q in fragment.charges) - set(process.charges))
    if charges:
        raise InputError(f"fragment formal charge(s) {charges} not among the model's charges {list(process.charges)}",
                         fragment.source)


def fragment_sizes(fragment: Fragment, add: int | None, histogram: np.ndarray, n: int, rng) -> np.ndarray:
    """Total atom counts of ``n`` completed molecules: M + ``add``, or drawn from the model's size
    histogram restricted to more than M atoms when ``add`` is None."""
    m, largest = len(fragment), len(histogram) - 1
    if add is not None:
        if add < 1:
            raise InputError(f"--add must be at least 1, got {add}")
        if m + add > largest:
            raise InputError(f"fragment of {m} atoms + --add {add} = {m + add} atoms: more than the largest molecule "
                             f"of the model's size histogram ({largest} atoms)", fragment.source)
        return np.full(n, m + add)
    weights = np.asarray(histogram, dtype=np.float64).copy()
    weights[: m + 1] = 0.0
    if weights.sum() == 0:
        raise InputError(f"fragment of {m} atoms: the model's size histogram has no molecule larger (largest "
                         f"{largest} atoms)", fragment.source)
    return rng.choice(len(weights), size=n, p=weights / weights.sum())


def _fixed_mask(b: torch.Tensor, m: int) -> torch.Tensor:
    """True for the first ``m`` atoms of every molecule (``b`` sorted)."""
    counts = torch.bincount(b)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return torch.arange(len(b), device=b.device) - first < m


def _impose(state: dict, known: dict, fixed: torch.Tensor, b: torch.Tensor, n: int) -> dict:
    """Fixed atoms (and bonds between fixed atoms) ← known state, its positions moved to the mean of the
    fixed atoms of ``state``."""
    out = {key: value.clone() for key, value in state.items()}
    if "bonds" in known:
        i, j = pair_index(b)
        out["bonds"][fixed[i] & fixed[j]] = known["bonds"]
    bf = b[fixed]
    target = scatter_mean(state["x"][fixed], bf, n)
    kx = known["x"] - gather(scatter_mean(known["x"], bf, n) - target, bf)
    out["x"][fixed] = kx
    out["x"] = remove_mean(out["x"], b, n)
    for key, value in known.items():
        if key not in ("x", "bonds"):
            out[key][fixed] = value
    return out


def _place(x: torch.Tensor, fixed: torch.Tensor, b: torch.Tensor, n: int, fragment: Fragment) -> torch.Tensor:
    """Float64 positions in the fragment's frame: fixed atoms at their input coordinates exactly, the
    others translated by ȳ − x̄_fixed."""
    x = x.double()
    y = torch.as_tensor(np.asarray(fragment.positions, dtype=np.float64), device=x.device)
    shift = y.mean(0) - scatter_mean(x[fixed], b[fixed], n)
    x = x + gather(shift, b)
    x[fixed] = y.repeat(n, 1)
    return x


def _separate(process, x, types, b, n, scale, mobile):
    """The state's positions projected to pairs ≥ scale · d_min (types: indices into the elements)."""
    ij = pair_index(b)
    z = torch.as_tensor(process.elements, device=types.device)[types]
    d_min = scale * bonded_minimum(z[ij[0]], z[ij[1]]).to(x.dtype)
    return project(x, d_min, ij, mobile)


@torch.no_grad()
def guided_sample(process, sizes, steps: int, generator=None, dtype=torch.float32, fragment: Fragment | None = None,
                  resample: int = 1, separation: bool = False, condition=None) -> list[Molecule]:
    """Molecules of the given sizes, completing ``fragment`` (its atoms first in every molecule) and/or
    with the separation constraint; ``resample`` r repeats every step r times (RePaint); ``condition``
    (B, C) properties for a conditioned model. A model that generates bonds keeps the fragment's bonds."""
    if steps < 1 or resample < 1:
        raise InputError("steps and --resample must be at least 1")
    c = process.normalise(condition, dtype) if process.conditions else None
    stepper = STEPPERS[process.name](process)
    device = process.device
    b, n = size_batch(sizes, device)
    m = len(fragment) if fragment is not None else 0
    if fragment is not None and int(torch.bincount(b).min()) <= m:
        raise InputError(f"every molecule needs more atoms than the fragment's {m}", fragment.source)
    fixed = _fixed_mask(b, m)
    mobile = ~fixed if fragment is not None else None
    clean, noise = None, None
    if fragment is not None:
        z_index = {z: k for k, z in enumerate(process.elements)}
        q_index = {q: k for k, q in enumerate(process.charges)}
        y = torch.as_tensor(np.asarray(fragment.positions, dtype=np.float64), device=device)
        clean = {"x": (y - y.mean(0)).to(dtype).repeat(n, 1),
                 "types": torch.tensor([z_index[int(z)] for z in fragment.numbers], device=device).repeat(n),
                 "charges": torch.tensor([q_index[int(q)] for q in fragment.charges], device=device).repeat(n)}
        if process.bonds:
            clean["bonds"] = fragment.pair_orders().to(device).repeat(n)
        noise = stepper.path_noise(clean, generator)
    state = process.start(b, n, generator, dtype)
    grid = process.grid(steps, dtype).to(device)
    for t, s in zip(grid[:-1], grid[1:]):
        for r in range(resample):
            state = process.step(state, t, s, b, n, generator, c)
            if fragment is not None:
                if stepper.fresh_noise:
                    noise = stepper.path_noise(clean, generator)
                state = _impose(state, stepper.known(clean, s, noise), fixed, b, n)
            if separation:
                x = _separate(process, state["x"], stepper.types(state), b, n, stepper.signal(s), mobile)
                state["x"] = remove_mean(x, b, n)
            if r < resample - 1:
                state = stepper.renoise(state, s, t, b, n, generator)
    x, types, charges, bonds = process.finish(state, b, n, c)
    if fragment is not None:
        x = _place(x, fixed, b, n, fragment)
        types, charges = types.clone(), charges.clone()
        types[fixed], charges[fixed] = clean["types"], clean["charges"]
    if separation:
        x = _separate(process, x, types, b, n, 1.0, mobile)
    return process.to_molecules(x, types, charges, b, bonds)


@dataclass
class Guide:
    """What ``localframe generate sample`` was asked for beyond plain sampling: a fragment to complete
    (``--fragment``, ``--add``, ``--resample``) and/or the separation constraint (``--separation``)."""

    process: object
    sizes: np.ndarray | None
    fragment: Fragment | None
    resample: int
    separation: bool

    def sample(self, sizes, steps: int, generator=None, condition=None) -> list[Molecule]:
        return guided_sample(self.process, sizes, steps, generator, fragment=self.fragment, resample=self.resample,
                             separation=self.separation, condition=condition)


def guide(process, histogram, n: int, rng, fragment: str | None = None, add: int | None = None, resample: int = 1,
          separation: bool = False) -> Guide | None:
    """A :class:`Guide` from the sample options (None when none is given); sizes from the fragment."""
    if fragment is None:
        if add is not None or resample != 1:
            raise InputError("--add and --resample need --fragment")
        return Guide(process, None, None, 1, True) if separation else None
    if resample < 1:
        raise InputError(f"--resample must be at least 1, got {resample}")
    frag = read_fragment(fragment)
    check_fragment(process, frag)
    return Guide(process, fragment_sizes(frag, add, histogram, n, rng), frag, int(resample), bool(separation))
