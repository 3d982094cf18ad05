r"""Flow matching: continuous for positions, discrete (categorical) for atom types and charges.

Time runs from noise (t = 0) to data (t = 1).

- **Positions**: x_0 ~ N(0, I) in the zero-centre-of-mass subspace, x_t = (1 − t) x_0 + t x_1; the
  network predicts the clean x̂_1 = x_t + Δx and is trained with ‖x̂_1 − x_1‖²; the velocity is
  v = (x̂_1 − x_t) / (1 − t) and sampling integrates it with Euler steps.
- **Types, charges** (discrete flow matching with a uniform prior, Campbell et al. 2024): each
  category c_t equals the data's c_1 with probability t, else a uniform draw; the network predicts
  p(c_1 | state) (cross-entropy). The marginal jump rate to category k ≠ c is p̂(k)/(1 − t), so an
  Euler step of size Δt redraws c from p̂ with probability Δt/(1 − t) (capped at 1).

Loss: L = ‖x̂_1 − x_1‖² (mean per coordinate) + CE(types) + CE(charges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from localframe.generate.process import Batch, Process, centred_noise, remove_mean, size_batch

T_MAX = 1.0


class FlowMatching(Process):
    name = "flow"

    def one_hot(self, types, charges, dtype):
        return torch.cat([F.one_hot(types, len(self.elements)), F.one_hot(charges, len(self.charges))], -1).to(dtype)

    def predict(self, x, types, charges, t, batch):
        """(x̂_1, type logits, charge logits)."""
        dx, logits = self.network(x, self.one_hot(types, charges, x.dtype), t, batch)
        k = len(self.elements)
        return x + dx, logits[:, :k], logits[:, k:]

    def loss(self, batch: Batch, t=None, noise=None) -> torch.Tensor:
        x1, b, n = batch.x, batch.batch, batch.n_mol
        t = torch.rand(n, dtype=x1.dtype) if t is None else t
        if noise is None:
            x0 = centred_noise(x1.shape, b, n, dtype=x1.dtype)
            keep_u = torch.rand(len(b), 2, dtype=x1.dtype)
            random_types = torch.randint(len(self.elements), (len(b),))
            random_charges = torch.randint(len(self.charges), (len(b),))
        else:
            x0, keep_u, random_types, random_charges = noise
        tb = t[b]
        xt = (1 - tb).unsqueeze(-1) * x0 + tb.unsqueeze(-1) * x1
        types = torch.where(keep_u[:, 0] < tb, batch.types, random_types)
        charges = torch.where(keep_u[:, 1] < tb, batch.charges, random_charges)
        x_hat, type_logits, charge_logits = self.predict(xt, types, charges, t, b)
        return ((x_hat - x1).pow(2).mean() + F.cross_entropy(type_logits, batch.types)
                + F.cross_entropy(charge_logits, batch.charges))

    @torch.no_grad()
    def sample(self, sizes, steps: int, generator=None, dtype=torch.float32):
        if steps < 1:
            raise ValueError("steps must be at least 1")
        b, n = size_batch(sizes)
        x = centred_noise((len(b), 3), b, n, generator, dtype)
        types = torch.randint(len(self.elements), (len(b),), generator=generator)
        charges = torch.randint(len(self.charges), (len(b),), generator=generator)
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=dtype)
        for t, t_next in zip(grid[:-1], grid[1:]):
            dt = t_next - t
            x_hat, type_logits, charge_logits = self.predict(x, types, charges, t.expand(n), b)
            last = bool(t_next >= T_MAX)
            x = remove_mean(x + dt * (x_hat - x) / (1 - t), b, n) if not last else remove_mean(x_hat, b, n)
            jump = 1.0 if last else float(min(1.0, dt / (1 - t)))
            types = self._jump(types, type_logits, jump, generator)
            charges = self._jump(charges, charge_logits, jump, generator)
        return self.to_molecules(x, types, charges, b)

    @staticmethod
    def _jump(state, logits, probability, generator):
        draw = torch.multinomial(logits.softmax(-1).float(), 1, generator=generator).squeeze(-1)
        u = torch.rand(state.shape, generator=generator)
        return torch.where(u < probability, draw, state)
