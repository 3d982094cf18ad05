"""Training a generative model from a YAML config (``localframe generate train CONFIG``), and its model file.

Config (every key optional except none; unknown keys are an error)::

    process: flow            # flow | edm
    bonds: {enabled: false, weight: 1.0}   # co-generate bond orders (flow only); weight of their loss
    condition: null          # a QM9 property (alpha, gap, homo, lumo, mu, Cv, ...) the model is conditioned on
    model: {name: egnn, hparams: {hidden_channels: 64, num_layers: 4}}
    data: {hydrogens: true, n_train: 5000, half: null}   # half: first | second of the training split
    train: {minutes: 15, max_steps: null, batch_size: 32, lr: 5.0e-4, seed: 0, threads: 1, log_every: 50,
            separation_weight: 0.0,   # > 0: add w · L_sep (localframe.generate.separation) to the loss
            ema_decay: 0.999,         # the saved weights are an exponential moving average (EDM's 0.999); 0: the last step's
            save_every_minutes: 10,   # model.pt is rewritten (atomically) this often, so a stopped run keeps its latest
            device: auto}             # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    run_dir: runs/generate_qm9

The run directory gets ``config.yaml`` (resolved), ``metrics.csv`` (step, seconds, loss) and
``model.pt``: a plain dict (config, weights, elements, charges, the training atom-count
histogram and, for a conditioned model, the training (atom count, property) pairs that sampling
draws from) that :func:`load` reads with ``torch.load(weights_only=True)``.

The weights saved are the moving average θ̄ ← d θ̄ + (1 − d) θ over the optimizer steps (d = ``ema_decay``),
as in EDM (Hoogeboom et al. 2022) and the flow-matching models after it; the loss logged is the live model's.

Devices: training moves the process and every batch to ``train.device`` (:func:`resolve_device`); the model
file is device-free (weights saved on CPU, loaded onto CPU, then moved). Random draws are made on CPU (the
global generator, or the ``torch.Generator()`` sampling seeds) and moved to the device
(:func:`localframe.generate.process.randn`), so a seed gives the same noise on every device and, on CPU,
the same molecules as before devices existed; on a GPU the molecules differ only by floating-point rounding.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from localframe.errors import InputError
from localframe.files import atomic_open, write_text

DEFAULTS = {
    "process": "flow",
    "bonds": {"enabled": False, "weight": 1.0},
    "condition": None,
    "model": {"name": "egnn", "hparams": {"hidden_channels": 64, "num_layers": 4}},
    "data": {"hydrogens": True, "n_train": 5000, "half": None},
    "train": {"minutes": 15.0, "max_steps": None, "batch_size": 32, "lr": 5.0e-4, "seed": 0, "threads": 1,
              "log_every": 50, "separation_weight": 0.0, "ema_decay": 0.999, "save_every_minutes": 10.0,
              "device": "auto"},
    "run_dir": "runs/generate_qm9",
}


def _processes():
    from localframe.generate.edm import EDM
    from localframe.generate.flow import FlowMatching

    return {cls.name: cls for cls in (EDM, FlowMatching)}


def _merge(base: dict, new: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        if key not in base:
            raise InputError(f"generate config: unknown key {where + key!r}; known: {', '.join(base)}")
        if isinstance(base[key], dict) and key != "hparams":
            if not isinstance(value, dict):
                raise InputError(f"generate config: {where + key!r} must be a mapping")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def load_config(path: str | None, overrides: list[str] | None = None) -> dict:
    """A config from YAML (or the defaults) with ``section.key=value`` overrides applied."""
    raw = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            raise InputError(f"not valid YAML: {' '.join(str(err).split())}", path) from None
        if not isinstance(raw, dict):
            raise InputError("a generate config is a mapping", path)
    cfg = _merge(DEFAULTS, raw)
    for item in overrides or []:
        key, _, value = item.partition("=")
        parts = key.split(".")
        node = cfg
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise InputError(f"generate config: unknown key {key!r}")
            node = node[part]
        if parts[-1] not in node and parts[-2:-1] != ["hparams"]:
            raise InputError(f"generate config: unknown key {key!r}")
        node[parts[-1]] = yaml.safe_load(value)
    if cfg["process"] not in _processes():
        raise InputError(f"generate config: process must be one of {', '.join(_processes())}, got {cfg['process']!r}")
    return cfg


def resolve_device(value: str | None = "auto") -> torch.device:
    """``auto`` (cuda when ``torch.cuda.is_available()``, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    value = "auto" if value is None else str(value).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {value!r} requested but CUDA is not available (this torch build or machine has "
                             f"no GPU); use device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {value!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def conditions(cfg: dict) -> tuple[str, ...]:
    """The property names of ``cfg["condition"]`` (None, one name, or a list of names)."""
    c = cfg.get("condition")
    return () if c is None else (c,) if isinstance(c, str) else tuple(c)


def build(cfg: dict, elements, charges):
    from localframe.generate.denoiser import Denoiser
    from localframe.generate.process import BOND_ORDERS

    n = len(elements) + len(charges)
    bonds = cfg.get("bonds", DEFAULTS["bonds"])
    names = conditions(cfg)
    network = Denoiser(n, n, cfg["model"]["name"], cfg["model"].get("hparams") or {},
                       bond_classes=len(BOND_ORDERS) if bonds["enabled"] else 0, conditions=len(names))
    process = _processes()[cfg["process"]](network, elements, charges, bonds=bool(bonds["enabled"]), conditions=names,
                                           bond_weight=float(bonds["weight"]))
    process.separation_weight = float(cfg["train"].get("separation_weight", 0.0))
    return process


def train(cfg: dict, progress: bool = True) -> dict:
    from localframe.generate.data import CHARGES, ELEMENTS_H, ELEMENTS_NO_H, load_split
    from localframe.progress import Progress

    t_cfg = cfg["train"]
    device = resolve_device(t_cfg.get("device", "auto"))
    torch.set_num_threads(int(t_cfg["threads"]))
    torch.manual_seed(int(t_cfg["seed"]))
    rng = np.random.default_rng(int(t_cfg["seed"]))
    hydrogens = bool(cfg["data"]["hydrogens"])
    data = load_split("train", hydrogens=hydrogens, n=cfg["data"]["n_train"], half=cfg["data"]["half"])
    elements = ELEMENTS_H if hydrogens else ELEMENTS_NO_H
    process = build(cfg, elements, CHARGES)
    molecules = data.molecules()
    pairs = None
    if process.bonds:
        process.set_bond_prior(bond_order_counts(data))
    if process.conditions:
        values = data.properties(process.conditions)
        process.set_condition_stats(values)
        for mol, row in zip(molecules, values):
            mol.info["properties"] = dict(zip(process.conditions, row.tolist()))
        pairs = np.concatenate([data.n_atoms[:, None], values], axis=1)
    process.to(device)
    optimizer = torch.optim.Adam(process.parameters(), lr=float(t_cfg["lr"]))
    average = MovingAverage(process, float(t_cfg["ema_decay"]))
    run = Path(cfg["run_dir"])
    run.mkdir(parents=True, exist_ok=True)
    write_text(run / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    budget = 60.0 * float(t_cfg["minutes"])
    max_steps = t_cfg["max_steps"]
    rows, start, step, recent = ["step,seconds,loss"], time.perf_counter(), 0, []
    every, saved = 60.0 * float(t_cfg["save_every_minutes"]), time.perf_counter()

    def checkpoint():
        write_text(run / "metrics.csv", "\n".join(rows) + "\n")
        save(run / "model.pt", process, cfg, data.atom_count_histogram(), pairs, average.state_dict())

    meter = Progress(max_steps or budget, f"generate train ({cfg['process']})", enabled=progress, unit="steps" if max_steps else "s")
    meter.start()
    while True:
        elapsed = time.perf_counter() - start
        if (max_steps is not None and step >= max_steps) or (max_steps is None and elapsed >= budget):
            break
        pick = rng.choice(len(molecules), size=min(int(t_cfg["batch_size"]), len(molecules)), replace=False)
        batch = process.make_batch([molecules[k] for k in pick])  # on the process's device
        loss = process.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(process.parameters(), 1.0)
        optimizer.step()
        average.update()
        step += 1
        last = loss.item()
        recent.append(last)
        if step % int(t_cfg["log_every"]) == 0:
            rows.append(f"{step},{time.perf_counter() - start:.1f},{np.mean(recent):.5f}")
            recent = []
        if every > 0 and time.perf_counter() - saved >= every:
            checkpoint()
            saved = time.perf_counter()
        meter.update(step if max_steps else time.perf_counter() - start, loss=f"{last:.4f}", step=step)
    meter.close()
    seconds = time.perf_counter() - start
    checkpoint()
    epochs = step * int(t_cfg["batch_size"]) / len(molecules)
    return {"steps": step, "seconds": seconds, "epochs": epochs, "n_train": len(molecules), "dropped": data.dropped,
            "model": str(run / "model.pt"), "last_loss": rows[-1] if len(rows) > 1 else None}


def bond_order_counts(data) -> np.ndarray:
    """Atom pairs i < j of the molecules per bond order (none, single, double, triple)."""
    pairs = int((data.n_atoms * (data.n_atoms - 1) // 2).sum())
    counts = np.bincount(data.bonds[:, 2], minlength=4)[:4].astype(np.int64)
    counts[0] = pairs - counts[1:].sum()
    return counts


class MovingAverage:
    """θ̄ ← d θ̄ + (1 − d) θ over a module's parameters after every optimizer step; d = 0 keeps the last θ."""

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise InputError(f"generate config: train.ema_decay must be in [0, 1), got {decay}")
        self.module, self.decay = module, decay
        self.names = [name for name, p in module.named_parameters() if p.requires_grad]
        self.values = [p.detach().clone() for name, p in module.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self) -> None:
        live = dict(self.module.named_parameters())
        for name, value in zip(self.names, self.values):
            value.lerp_(live[name].detach(), 1.0 - self.decay)

    def state_dict(self) -> dict:
        """The module's state with its trained parameters replaced by their averages (buffers as they are)."""
        state = self.module.state_dict()
        state.update(zip(self.names, (v.clone() for v in self.values)))
        return state


def save(path, process, cfg: dict, histogram: np.ndarray, condition_pairs: np.ndarray | None = None,
         state_dict: dict | None = None) -> None:
    """``condition_pairs`` (M, 1 + C): the training molecules' atom counts and properties; ``state_dict``: the
    weights to save (default: the process's own)."""
    payload = {"kind": "localframe.generate", "config": cfg,
               "state_dict": {key: value.detach().cpu() for key, value in
                              (process.state_dict() if state_dict is None else state_dict).items()},
               "elements": list(process.elements), "charges": list(process.charges),
               "atom_count_histogram": [int(c) for c in histogram]}
    if condition_pairs is not None:
        payload["condition_pairs"] = np.asarray(condition_pairs, dtype=np.float64).tolist()
    with atomic_open(path) as handle:
        torch.save(payload, handle)


# Models that the package ships (``localframe generate sample NAME``), with their metrics in docs/generation.md
SHIPPED = {
    # flow matching with bonds, EGNN 64 x 4, 60 minutes on one CPU core (36,150 steps), configs/generate_qm9.yaml
    "qm9-flow-bonds": "qm9_flow_bonds.pt",
}


def model_path(path) -> Path:
    """A model file's path, or the packaged file of a shipped model's name (:data:`SHIPPED`); a file of that
    name in the working directory wins."""
    path = Path(path)
    if path.is_file() or str(path) not in SHIPPED:
        return path
    from importlib.resources import files

    return Path(str(files("localframe.generate") / "checkpoints" / SHIPPED[str(path)]))


def load(path, device="cpu"):
    """(process on ``device``, atom-count histogram) from a generative model file or a shipped model's name
    (:data:`SHIPPED`); read onto CPU, then moved."""
    path = model_path(path)
    if not path.is_file():
        if not path.suffix:
            raise InputError(f"no such model file, and not a shipped model (shipped: {', '.join(SHIPPED)})", str(path))
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that is not weights only, or not a torch file
        raise InputError(f"not a localframe generative model file ({type(err).__name__})", str(path)) from None
    if not isinstance(payload, dict) or payload.get("kind") != "localframe.generate":
        raise InputError("not a localframe generative model file", str(path))
    process = build(payload["config"], tuple(payload["elements"]), tuple(payload["charges"]))
    # a file written before a feature's buffers existed lacks them; they are empty when the feature is off
    empty = {key: value for key, value in process.state_dict().items() if value.numel() == 0}
    process.load_state_dict({**empty, **payload["state_dict"]})
    process.eval()
    process.to(resolve_device(device) if isinstance(device, str) else device)
    process.condition_pairs = np.array(payload.get("condition_pairs", []), dtype=np.float64)
    return process, np.array(payload["atom_count_histogram"])
