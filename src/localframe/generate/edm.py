r"""EDM: variance-preserving Gaussian diffusion of positions and scaled one-hot features (Hoogeboom et al. 2022).

State z = [x, h]: x (N, 3) in the zero-centre-of-mass subspace, h = 0.25·[one-hot type, one-hot charge]
(EDM scales its one-hot features by 1/4). With α_t, σ_t from :mod:`localframe.generate.schedule`:

    z_t = α_t z + σ_t ε,        ε = [ε_x (centred), ε_h]
    L   = E_{t ~ U(0,1)} ‖ε − ε̂(z_t, t)‖² / (number of entries)     (EDM's L2 objective)

Ancestral sampling on any grid 1 = t_T > … > t_0 = 0, for s < t with α_{t|s} = α_t/α_s and
σ²_{t|s} = σ_t² − α²_{t|s} σ_s²:

    z_s = z_t / α_{t|s} − σ²_{t|s} / (α_{t|s} σ_t) · ε̂  +  (σ_{t|s} σ_s / σ_t) · ε'        (ε' centred for x)

and at t = 0 the clean estimate (z_0 − σ_0 ε̂) / α_0; types and charges are the argmax of their blocks
(an atom whose features are not finite gets NaN positions, so its molecule becomes a failed record).
A conditioned model (``conditions``) gets the normalised property of each molecule as a fixed
input of every step, as EDM feeds its context. EDM generates no bonds (``bonds`` must be off).
"""

from __future__ import annotations

import torch

from localframe.generate.process import Batch, Process, centred_noise, rand, randn, remove_mean
from localframe.generate.schedule import alpha_sigma

FEATURE_SCALE = 0.25


class EDM(Process):
    name = "edm"

    def features(self, batch: Batch) -> torch.Tensor:
        k = len(self.elements)
        h = torch.zeros(len(batch.types), self.n_features, dtype=batch.x.dtype, device=batch.x.device)
        rows = torch.arange(len(h), device=h.device)
        h[rows, batch.types] = 1.0
        h[rows, k + batch.charges] = 1.0
        return FEATURE_SCALE * h

    def predict(self, x, h, t, batch, condition=None):
        """ε̂ = (ε̂_x, ε̂_h) from the denoiser."""
        return self.network(x, h, t, batch, condition=condition)

    def loss(self, batch: Batch, t=None, noise=None) -> torch.Tensor:
        x, h, b, n = batch.x, self.features(batch), batch.batch, batch.n_mol
        t = rand(n, dtype=x.dtype, device=x.device) if t is None else t
        eps_x, eps_h = noise if noise is not None else (centred_noise(x.shape, b, n, dtype=x.dtype),
                                                        randn(h.shape, dtype=h.dtype, device=h.device))
        alpha, sigma = alpha_sigma(t)
        a, s = alpha[b].unsqueeze(-1), sigma[b].unsqueeze(-1)
        pred_x, pred_h = self.predict(a * x + s * eps_x, a * h + s * eps_h, t, b, batch.condition)
        return (torch.cat([(pred_x - eps_x).pow(2), (pred_h - eps_h).pow(2)], dim=-1).mean()
                + self.separation_loss(a * x + s * (eps_x - pred_x), batch, alpha))  # α x̂_0 = z_t − σ ε̂

    def start(self, b, n, generator, dtype):
        return {"x": centred_noise((len(b), 3), b, n, generator, dtype),
                "h": randn((len(b), self.n_features), generator, dtype, b.device)}

    def grid(self, steps, dtype):
        return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype, device=self.device)

    def step(self, state, t, s, b, n, generator, condition=None):
        """Ancestral step t → s of the module docstring (fresh noise from ``generator``)."""
        x, h = state["x"], state["h"]
        eps_x, eps_h = self.predict(x, h, t.expand(n), b, condition)
        (a_t, sig_t), (a_s, sig_s) = alpha_sigma(t), alpha_sigma(s)
        a_ts = a_t / a_s
        var_ts = sig_t**2 - a_ts**2 * sig_s**2
        std = var_ts.clamp(min=0).sqrt() * sig_s / sig_t
        x = remove_mean(x / a_ts - var_ts / (a_ts * sig_t) * eps_x, b, n) + std * centred_noise(x.shape, b, n, generator, x.dtype)
        h = h / a_ts - var_ts / (a_ts * sig_t) * eps_h + std * randn(h.shape, generator, h.dtype, h.device)
        return {"x": x, "h": h}

    def finish(self, state, b, n, condition=None):
        """The clean estimate (z_0 − σ_0 ε̂) / α_0; types and charges the argmax of their blocks."""
        x, h = state["x"], state["h"]
        a0, s0 = alpha_sigma(torch.zeros((), dtype=x.dtype, device=x.device))
        eps_x, eps_h = self.predict(x, h, torch.zeros(n, dtype=x.dtype, device=x.device), b, condition)
        x = remove_mean((x - s0 * eps_x) / a0, b, n)
        h = (h - s0 * eps_h) / a0
        x = torch.where(torch.isfinite(h).all(-1, keepdim=True), x, torch.nan)  # undefined type: a failed sample
        k = len(self.elements)
        return x, h[:, :k].argmax(-1), h[:, k:].argmax(-1), None
