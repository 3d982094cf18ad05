r"""The charged N-body task ES(5) of EGNN (Satorras et al. 2021) and ClofNet (Du et al. 2022).

Simulator (the physics and constants of the EGNN/ClofNet generator, written anew and vectorised
over systems): 5 particles of unit mass with charges q = ±1 (probability ½ each), Coulomb-like
pair forces, no box walls after the start:

    F_i = Σ_{j≠i} q_i q_j (x_i − x_j) / |x_i − x_j|³,   each component clipped to ±0.1/Δt
    E   = ½ Σ_i |v_i|² + Σ_{i<j} q_i q_j / |x_i − x_j|        (conserved up to O(Δt))

Start: x ~ N(0, 1) per coordinate (reflected into [−5, 5]), velocities of norm 0.5 in random
directions. Integrator: kick-drift (symplectic Euler) with Δt = 10⁻³: v ← v + Δt F(x) once, then
per step x ← x + Δt v, v ← v + Δt F(x). The generators keep every 100th step of a 5,000-step run
(frame k = step 100(k + 1)); the task maps frame 30 (step 3,100) to frame 40 (step 4,100): given
positions, velocities and charges, predict the positions 1,000 steps (time 1.0) later.
3,000 training, 2,000 validation and 2,000 test trajectories (as the papers); loss and metric:
mean squared error over all coordinates; the test MSE is taken at the best validation point.

Models, same data and seeds, each trained with its published optimiser:

* ``egnn``: EGNN for dynamics (``EGNN_vel`` of Satorras et al.), nf 64, 4 layers:
  m_ij = φ_e(h_i, h_j, |x_ij|², [q_i q_j, |x⁰_ij|²]),
  x_i ← x_i + mean_j (x_i − x_j) φ_x(m_ij) + φ_v(h_i) v_i,  h_i ← h_i + φ_h(h_i, Σ_j m_ij),
  h⁰_i = Linear(|v_i|). Adam, lr 5·10⁻⁴, batch 100 (their script); no coordinate clamp. Higher learning
  rates diverge under the 80-epoch budget (AdamW 10⁻² and Adam 2·10⁻³: NaN within 16 epochs).
* ``clofnet``: :class:`localframe.models.clofnet.ClofNetDynamics` (SE(3), as the paper), nf 64,
  4 layers; ``clofnet_e3``: the same with ``symmetry="E(3)"``. AdamW, lr 10⁻², batch 128,
  learning rate × 0.9 every epochs/8 (their README).

The budget is a number of epochs, the same for every model (default 80: ~3 min per run on one CPU
thread; the papers train 400 (ClofNet) and 10,000 (EGNN) epochs, so the figures are not their
converged ones). Results: docs/benchmarks.md, "N-body dynamics".
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from localframe.nn.scatter import gather, scatter_mean, scatter_sum

N_BALLS = 5
DT = 1e-3
MAX_FORCE = 0.1 / DT
FRAME_STEPS = (3100, 4100)  # frames 30 and 40 of a 5,000-step run sampled every 100 steps
SIZES = {"train": 3000, "val": 2000, "test": 2000}
QUICK = {"sizes": {"train": 32, "val": 16, "test": 16}, "epochs": 2, "hidden_channels": 16}
DEFAULT_EPOCHS = 80
#: Published optimiser settings: (optimiser, learning rate, batch size, step decay).
RECIPES = {
    "egnn": ("adam", 5e-4, 100, False),
    "clofnet": ("adamw", 1e-2, 128, True),
    "clofnet_e3": ("adamw", 1e-2, 128, True),
}
MODELS = tuple(RECIPES)
DEFAULT_MODELS = ("egnn", "clofnet")


# ---------------------------------------------------------------------- simulator
def forces(x: np.ndarray, q: np.ndarray, clip: bool = True) -> np.ndarray:
    """F (B, N, 3) on particles at x (B, N, 3) with charges q (B, N)."""
    return _forces(np.ascontiguousarray(x.transpose(1, 2, 0)), np.ascontiguousarray(q.T), clip).transpose(2, 0, 1)


def _forces(x: np.ndarray, q: np.ndarray, clip: bool) -> np.ndarray:
    """The same on particle-major arrays x (N, 3, B), q (N, B): contiguous rows, ~10x faster."""
    n = x.shape[0]
    f = np.zeros_like(x)
    for a in range(n):
        for b in range(a + 1, n):
            diff = x[a] - x[b]
            pair = diff * (q[a] * q[b] / ((diff * diff).sum(0)) ** 1.5)
            f[a] += pair
            f[b] -= pair
    return np.clip(f, -MAX_FORCE, MAX_FORCE, out=f) if clip else f


def energy(x: np.ndarray, v: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total energy (B,): kinetic plus Coulomb pair energy."""
    d = np.sqrt(((x[:, :, None, :] - x[:, None, :, :]) ** 2).sum(-1))
    n = x.shape[1]
    iu = np.triu_indices(n, 1)
    return 0.5 * (v**2).sum((1, 2)) + (q[:, :, None] * q[:, None, :] / np.where(d > 0, d, 1.0))[:, iu[0], iu[1]].sum(-1)


def integrate(x: np.ndarray, v: np.ndarray, q: np.ndarray, save_steps, dt: float = DT, clip: bool = True):
    """Kick-drift integration; positions and velocities (len(save_steps), B, N, 3) after those steps."""
    x, v, q = (a.transpose(1, 2, 0).copy() for a in (x, v, q[..., None]))  # copies: x, v are updated in place
    q = q[:, 0]
    v = v + dt * _forces(x, q, clip)
    xs, vs, saved = [], [], sorted(save_steps)
    for step in range(1, saved[-1] + 1):
        x += dt * v
        if step in saved:
            xs.append(x.transpose(2, 0, 1).copy())
            vs.append(v.transpose(2, 0, 1).copy())
        v += dt * _forces(x, q, clip)
    return np.stack(xs), np.stack(vs)


def initial_state(n_systems: int, rng: np.random.Generator, n_balls: int = N_BALLS, box: float = 5.0):
    """Random starts as the generator: positions, velocities of norm 0.5, charges ±1."""
    x = rng.normal(size=(n_systems, n_balls, 3)) * (n_balls / 5.0) ** (1 / 3)
    v = rng.normal(size=(n_systems, n_balls, 3))
    v *= 0.5 / np.linalg.norm(v, axis=-1, keepdims=True)
    over, under = x > box, x < -box
    x[over], v[over] = 2 * box - x[over], -np.abs(v[over])
    x[under], v[under] = -2 * box - x[under], np.abs(v[under])
    q = rng.choice(np.array([-1.0, 1.0]), size=(n_systems, n_balls))
    return x, v, q


def make_dataset(sizes: dict[str, int] | None = None, seed: int = 43,
                 cache: Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Splits {train, val, test} of arrays x, v (frame 30), q, target (frame 40 positions)."""
    sizes = sizes or SIZES
    if cache is not None and Path(cache).exists():
        with np.load(cache) as data:
            return {s: {k: data[f"{s}_{k}"] for k in ("x", "v", "q", "target")} for s in sizes}
    rng = np.random.default_rng(seed)
    starts = [initial_state(n, rng) for n in sizes.values()]  # split by split, then one integration
    x0, v0, q = (np.concatenate(parts) for parts in zip(*starts))
    xs, vs = integrate(x0, v0, q, set(FRAME_STEPS))
    bounds = np.cumsum([0, *sizes.values()])
    out = {split: {"x": xs[0, a:b], "v": vs[0, a:b], "q": q[a:b], "target": xs[1, a:b]}
           for split, a, b in zip(sizes, bounds[:-1], bounds[1:])}
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"{s}_{k}": a for s, arrays in out.items() for k, a in arrays.items()})
    return out


def reference_mse(data: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Test MSE of model-free predictions: no motion (x), straight lines x + v·t with the true t = 1.0,
    and with t fitted on the training split (the "Linear" baseline of Satorras et al.: 0.0819)."""
    t = (FRAME_STEPS[1] - FRAME_STEPS[0]) * DT
    train, test = data["train"], data["test"]
    fitted = float(((train["target"] - train["x"]) * train["v"]).sum() / (train["v"] ** 2).sum())

    def mse(pred):
        return float(((pred - test["target"]) ** 2).mean())

    return {"static": mse(test["x"]), "linear": mse(test["x"] + t * test["v"]),
            "linear_fit": mse(test["x"] + fitted * test["v"]), "fitted_time": fitted}


# ---------------------------------------------------------------------- models
class EGNNDynamicsLayer(nn.Module):
    """E_GCL_vel of Satorras et al.: EGNN layer with coordinate and velocity updates."""

    def __init__(self, hidden: int, edge_dim: int = 2):
        super().__init__()
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden + 1 + edge_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.velocity_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, h, x, v, edge_attr, edge_index):
        i, j = edge_index
        n = h.shape[0]
        diff = gather(x, i) - gather(x, j)
        m = self.edge_mlp(torch.cat([gather(h, i), gather(h, j), diff.pow(2).sum(-1, keepdim=True), edge_attr], dim=-1))
        x = x + scatter_mean(diff * self.coord_mlp(m), i, n) + self.velocity_mlp(h) * v
        return h + self.node_mlp(torch.cat([h, scatter_sum(m, i, n)], dim=-1)), x


class EGNNDynamics(nn.Module):
    """EGNN_vel of Satorras et al. for N-body dynamics: positions, velocities, charges in, positions out."""

    def __init__(self, hidden_channels: int = 64, num_layers: int = 4):
        super().__init__()
        self.embedding = nn.Linear(1, hidden_channels)
        self.layers = nn.ModuleList(EGNNDynamicsLayer(hidden_channels) for _ in range(num_layers))

    def forward(self, positions, velocities, charges, edge_index):
        i, j = edge_index
        qq = (gather(charges, i) * gather(charges, j)).unsqueeze(-1)
        edge_attr = torch.cat([qq, (gather(positions, i) - gather(positions, j)).pow(2).sum(-1, keepdim=True)], dim=-1)
        h, x = self.embedding(torch.linalg.vector_norm(velocities, dim=-1, keepdim=True)), positions
        for layer in self.layers:
            h, x = layer(h, x, velocities, edge_attr, edge_index)
        return x


def create(name: str, hidden_channels: int = 64, num_layers: int = 4) -> nn.Module:
    """An N-body model by name: ``egnn``, ``clofnet`` (SE(3), the paper's) or ``clofnet_e3``."""
    from localframe.models.clofnet import ClofNetDynamics

    if name == "egnn":
        return EGNNDynamics(hidden_channels, num_layers)
    if name in ("clofnet", "clofnet_e3"):
        return ClofNetDynamics(hidden_channels, num_layers, symmetry="SE(3)" if name == "clofnet" else "E(3)")
    raise ValueError(f"unknown N-body model {name!r}; available: {', '.join(MODELS)}")


def full_graph(n_systems: int, n_balls: int = N_BALLS) -> torch.Tensor:
    """edge_index (2, B·n(n−1)) of fully connected systems of ``n_balls`` consecutive nodes."""
    i, j = np.nonzero(1 - np.eye(n_balls))
    offsets = n_balls * np.arange(n_systems)[:, None]
    return torch.as_tensor(np.stack([(offsets + i).ravel(), (offsets + j).ravel()]), dtype=torch.long)


# ---------------------------------------------------------------------- training
def _tensors(split: dict[str, np.ndarray], dtype=torch.float32) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(a, dtype=dtype) for k, a in split.items()}


def _predict(model, x, v, q):
    b, n, _ = x.shape
    return model(x.reshape(-1, 3), v.reshape(-1, 3), q.reshape(-1), full_graph(b, n)).reshape(b, n, 3)


def evaluate(model: nn.Module, split: dict[str, torch.Tensor], batch_size: int = 500) -> float:
    """Mean squared error over all coordinates of a split."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(split["x"]), batch_size):
            sl = slice(start, start + batch_size)
            err = _predict(model, split["x"][sl], split["v"][sl], split["q"][sl]) - split["target"][sl]
            total, count = total + float(err.pow(2).sum()), count + err.numel()
    return total / count


def train(name: str, data: dict[str, dict[str, np.ndarray]], seed: int = 0, epochs: int = DEFAULT_EPOCHS,
          hidden_channels: int = 64, log: Callable[[str], None] | None = None,
          recipe: str | None = None) -> dict[str, Any]:
    """Train model ``name`` for ``epochs`` with its published recipe (or that of model ``recipe``);
    validate 20 times, test at the best validation point."""
    optimiser_name, lr, batch_size, decay = RECIPES[recipe or name]
    torch.manual_seed(seed)
    model = create(name, hidden_channels)
    optimiser_class = torch.optim.AdamW if optimiser_name == "adamw" else torch.optim.Adam
    optimiser = optimiser_class(model.parameters(), lr=lr, weight_decay=1e-12)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, max(epochs // 8, 1), gamma=0.9) if decay else None
    splits = {k: _tensors(v) for k, v in data.items()}
    train_split, n_train = splits["train"], len(splits["train"]["x"])
    generator = torch.Generator().manual_seed(seed)
    every = max(epochs // 20, 1)
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    start, curve = time.perf_counter(), []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=generator)
        for k in range(n_train // batch_size or 1):  # drop_last, as the papers' loaders
            idx = order[k * batch_size:(k + 1) * batch_size]
            pred = _predict(model, train_split["x"][idx], train_split["v"][idx], train_split["q"][idx])
            loss = (pred - train_split["target"][idx]).pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if scheduler is not None:
            scheduler.step()
        if epoch % every == 0 or epoch == epochs:
            val = evaluate(model, splits["val"])
            curve.append({"epoch": epoch, "train_loss": loss.item(), "val_mse": val})
            if val < best[0]:
                best = (val, epoch, copy.deepcopy(model.state_dict()))
            if log:
                log(f"nbody {name} seed {seed}: epoch {epoch}/{epochs}, val MSE {val:.5f} "
                    f"({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    model.load_state_dict(best[2])
    return {"model": name, "seed": seed, "epochs": epochs, "train_seconds": round(seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "best_epoch": best[1], "val_mse": best[0], "test_mse": evaluate(model, splits["test"]), "curve": curve,
            "recipe": {"optimizer": optimiser_name, "lr": lr, "batch_size": batch_size, "step_decay": decay}}


def run(names: list[str] | None = None, seeds: int = 3, epochs: int | None = None, threads: int = 1,
        quick: bool = False, n_train: int | None = None, n_test: int | None = None, data_dir: Path | str = "runs/bench/data",
        log: Callable[[str], None] | None = None, save: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """The ES(5) suite: simulate (cached), train every model for every seed, report test MSEs."""
    from localframe.bench import common

    names = list(names or DEFAULT_MODELS)
    sizes = dict(QUICK["sizes"] if quick else SIZES)
    sizes["train"] = n_train or sizes["train"]
    sizes["test"] = n_test or sizes["test"]
    epochs = epochs or (QUICK["epochs"] if quick else DEFAULT_EPOCHS)
    hidden = QUICK["hidden_channels"] if quick else 64
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    load_start = common.load_average()
    try:
        start = time.perf_counter()
        cache = Path(data_dir) / f"nbody_es5_{sizes['train']}_{sizes['val']}_{sizes['test']}_seed43.npz"
        data = make_dataset(sizes, seed=43, cache=cache)
        if log:
            log(f"nbody: {sizes} trajectories ({time.perf_counter() - start:.0f} s to simulate or load)")
        result = {"environment": common.environment(threads, "float32"),
                  "settings": {"models": names, "seeds": seeds, "epochs": epochs, "hidden_channels": hidden,
                               "sizes": sizes, "quick": quick, "data": str(cache.name)},
                  "reference": reference_mse(data), "rows": []}
        for name in names:
            for seed in range(seeds):
                result["rows"].append(train(name, data, seed, epochs, hidden, log))
                if save:
                    save(result)
    finally:
        torch.set_num_threads(previous)
    result["environment"]["load_average_start"] = load_start
    result["environment"]["load_average_end"] = common.load_average()
    result["summary"] = summarize(result)
    return result


def summarize(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per model: mean and standard deviation of the test MSE over seeds, parameters, seconds per run."""
    out = {}
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["model"] == name]
        mse = np.array([r["test_mse"] for r in rows])
        out[name] = {"test_mse_mean": float(mse.mean()),
                     "test_mse_std": float(mse.std(ddof=1)) if len(mse) > 1 else 0.0,
                     "seeds": len(rows), "parameters": rows[0]["parameters"],
                     "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rows]))}
    return out


def markdown(result: dict[str, Any]) -> str:
    """A table of the suite's results for docs/benchmarks.md."""
    s, ref = result["settings"], result["reference"]
    lines = ["| model | parameters | test MSE (mean ± sd over seeds) | per seed | training time per run |",
             "|---|---|---|---|---|"]
    for name, row in result["summary"].items():
        seeds = ", ".join(f"{r['test_mse']:.4f}" for r in result["rows"] if r["model"] == name)
        lines.append(f"| {name} | {row['parameters']:,} | {row['test_mse_mean']:.4f} ± {row['test_mse_std']:.4f} "
                     f"| {seeds} | {row['train_seconds_mean'] / 60:.1f} min |")
    lines += ["", f"Model-free references on the same test set: no motion {ref['static']:.4f}, straight lines "
              f"x + v·t {ref['linear']:.4f} (t = 1.0) and {ref['linear_fit']:.4f} (t = {ref['fitted_time']:.3f} "
              f"fitted on the training split; Satorras et al. report 0.0819). {s['epochs']} epochs, "
              f"{s['sizes']['train']} training trajectories, "
              f"{result['environment'].get('threads')} thread(s), float32."]
    return "\n".join(lines) + "\n"


__all__ = ["EGNNDynamics", "MODELS", "create", "energy", "evaluate", "forces", "full_graph", "integrate",
           "initial_state", "make_dataset", "markdown", "reference_mse", "run", "summarize", "train"]
