r"""Flow matching: continuous for positions, discrete (categorical) for atom types and charges.

Time runs from noise (t = 0) to data (t = 1).

- **Positions**: x_0 ~ N(0, I) in the zero-centre-of-mass subspace, x_t = (1 − t) x_0 + t x_1; the
  network predicts the clean x̂_1 = x_t + Δx and is trained with ‖x̂_1 − x_1‖²; the velocity is
  v = (x̂_1 − x_t) / (1 − t) and sampling integrates it with Euler steps.
- **Types, charges** (discrete flow matching with a uniform prior, Campbell et al. 2024): each
  category c_t equals the data's c_1 with probability t, else a uniform draw; the network predicts
  p(c_1 | state) (cross-entropy). The marginal jump rate to category k ≠ c is p̂(k)/(1 − t), so an
  Euler step of size Δt redraws c from p̂ with probability Δt/(1 − t) (capped at 1).

- **Bonds** (optional, ``bonds=True``): the bond order e_ij ∈ {none, single, double, triple} of
  every pair i < j follows the same discrete flow with the training set's marginal bond-order
  distribution as prior (most pairs are "none", as in SemlaFlow and FlowMol): e_t = e_1 with
  probability t, else a draw from the prior; the denoiser's bond head predicts p(e_1 | state).
  The state lives on pairs i < j only, so the sampled bond matrix is symmetric.
- **Conditions** (optional): the normalised property c̃ of each molecule is a fixed input of the
  denoiser at every step (given at sampling time).

Loss: L = ‖x̂_1 − x_1‖² (mean per coordinate) + CE(types) + CE(charges) + w_bonds CE(bonds) (mean over pairs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from localframe.generate.denoiser import pair_index
from localframe.generate.process import BOND_ORDERS, Batch, Process, centred_noise, multinomial, rand, randint, remove_mean

T_MAX = 1.0


class FlowMatching(Process):
    name = "flow"
    generates_bonds = True

    def __init__(self, network, elements, charges, bonds: bool = False, conditions=(), bond_weight: float = 1.0):
        super().__init__(network, elements, charges, bonds, conditions, bond_weight)
        prior = torch.full((len(BOND_ORDERS),), 1.0 / len(BOND_ORDERS))
        self.register_buffer("bond_prior", prior if self.bonds else torch.zeros(0))

    def set_bond_prior(self, counts) -> None:
        """The prior of the bond flow: the training pairs' counts per bond order (none, 1, 2, 3), normalised."""
        counts = torch.as_tensor(counts, dtype=torch.float64) + 1.0
        self.bond_prior.copy_(counts / counts.sum())

    def one_hot(self, types, charges, dtype):
        return torch.cat([F.one_hot(types, len(self.elements)), F.one_hot(charges, len(self.charges))], -1).to(dtype)

    def predict(self, x, types, charges, t, batch, bonds=None, condition=None):
        """(x̂_1, type logits, charge logits, bond logits or None)."""
        out = self.network(x, self.one_hot(types, charges, x.dtype), t, batch, bonds=bonds, condition=condition)
        dx, logits = out[0], out[1]
        k = len(self.elements)
        return x + dx, logits[:, :k], logits[:, k:], (out[2] if self.bonds else None)

    def loss(self, batch: Batch, t=None, noise=None) -> torch.Tensor:
        """``noise`` = (x_0, keep_u (N, 2), random types, random charges[, keep_u (P,), random bonds])."""
        x1, b, n = batch.x, batch.batch, batch.n_mol
        d = x1.device
        t = rand(n, dtype=x1.dtype, device=d) if t is None else t
        if noise is None:
            noise = (centred_noise(x1.shape, b, n, dtype=x1.dtype), rand((len(b), 2), dtype=x1.dtype, device=d),
                     randint(len(self.elements), (len(b),), device=d), randint(len(self.charges), (len(b),), device=d))
            if self.bonds:
                owner = b[pair_index(b)[0]]
                noise += (rand(len(owner), dtype=x1.dtype, device=d), self._prior_draw(len(owner), None))
        x0, keep_u, random_types, random_charges = noise[:4]
        tb = t[b]
        xt = (1 - tb).unsqueeze(-1) * x0 + tb.unsqueeze(-1) * x1
        types = torch.where(keep_u[:, 0] < tb, batch.types, random_types)
        charges = torch.where(keep_u[:, 1] < tb, batch.charges, random_charges)
        bonds = None
        if self.bonds:
            owner = b[pair_index(b)[0]]
            bonds = torch.where(noise[4] < t[owner], batch.bonds, noise[5])
        x_hat, type_logits, charge_logits, bond_logits = self.predict(xt, types, charges, t, b, bonds, batch.condition)
        loss = ((x_hat - x1).pow(2).mean() + F.cross_entropy(type_logits, batch.types)
                + F.cross_entropy(charge_logits, batch.charges))
        if self.bonds and len(bonds):
            loss = loss + self.bond_weight * F.cross_entropy(bond_logits, batch.bonds)
        return loss + self.separation_loss(tb.unsqueeze(-1) * x_hat, batch, t)

    def _prior_draw(self, n: int, generator) -> torch.Tensor:
        if not n:
            return torch.zeros(0, dtype=torch.long, device=self.bond_prior.device)
        return multinomial(self.bond_prior.float(), n, replacement=True, generator=generator)

    def start(self, b, n, generator, dtype):
        state = {"x": centred_noise((len(b), 3), b, n, generator, dtype),
                 "types": randint(len(self.elements), (len(b),), generator, b.device),
                 "charges": randint(len(self.charges), (len(b),), generator, b.device)}
        if self.bonds:
            state["bonds"] = self._prior_draw(pair_index(b).shape[1], generator)
        return state

    def grid(self, steps, dtype):
        return torch.linspace(0.0, 1.0, steps + 1, dtype=dtype, device=self.device)

    def step(self, state, t, t_next, b, n, generator, condition=None):
        """Euler step t → t' = t + Δt: x ← x + Δt (x̂_1 − x)/(1 − t) (x̂_1 at t' = T_MAX), each category
        redrawn from p̂ with probability min(1, Δt/(1 − t)) (1 at the last step)."""
        x = state["x"]
        x_hat, type_logits, charge_logits, bond_logits = self.predict(
            x, state["types"], state["charges"], t.expand(n), b, state.get("bonds"), condition)
        dt, last = t_next - t, bool(t_next >= T_MAX)
        x = remove_mean(x_hat if last else x + dt * (x_hat - x) / (1 - t), b, n)
        x = self._mark_undefined(x, b, type_logits, charge_logits, bond_logits)
        jump = 1.0 if last else float(min(1.0, dt / (1 - t)))
        out = {"x": x, "types": self._jump(state["types"], type_logits, jump, generator),
               "charges": self._jump(state["charges"], charge_logits, jump, generator)}
        if self.bonds:
            out["bonds"] = self._jump(state["bonds"], bond_logits, jump, generator)
        return out

    def finish(self, state, b, n, condition=None):
        return state["x"], state["types"], state["charges"], state.get("bonds")

    def _mark_undefined(self, x, b, type_logits, charge_logits, bond_logits):
        """NaN positions for atoms with a non-finite logit (of their type, charge or one of their bonds):
        their molecule becomes a failed record (:meth:`Process.to_molecules`)."""
        bad = ~(torch.isfinite(type_logits).all(-1) & torch.isfinite(charge_logits).all(-1))
        if bond_logits is not None and len(bond_logits):
            i, j = pair_index(b)
            pair_bad = ~torch.isfinite(bond_logits).all(-1)
            bad = bad | torch.zeros_like(bad).index_fill(0, i[pair_bad], True).index_fill(0, j[pair_bad], True)
        return torch.where(bad.unsqueeze(-1), torch.nan, x) if bool(bad.any()) else x

    @staticmethod
    def _jump(state, logits, probability, generator):
        logits = torch.where(torch.isfinite(logits).all(-1, keepdim=True), logits, 0.0)  # such atoms are marked failed
        draw = multinomial(logits.softmax(-1).float(), 1, generator=generator).squeeze(-1)
        u = rand(state.shape, generator, device=state.device)
        return torch.where(u < probability, draw, state)
