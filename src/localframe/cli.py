"""The ``localframe`` command line: parses arguments and calls the library. No logic of its own.

Errors a user can fix (:class:`localframe.errors.InputError`, missing files) print one line on
stderr and exit with status 2; an interrupt exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_INPUT = 2


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    from localframe.errors import InputError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"{flag} expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip()
    return out


def _source_options(args: argparse.Namespace) -> dict:
    options = {"keys": _pairs(args.key, "--key"), "units": _pairs(args.unit, "--unit"), "extra": _pairs(args.extra, "--extra")}
    if args.format:
        options["format"] = args.format
    return options


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("labels and units of a file source")
    group.add_argument("--key", action="append", metavar="LABEL=KEY",
                       help="file key holding a label, e.g. energy=REF_energy forces=REF_forces virial=REF_virial "
                            "(repeatable; default: the label's own key, else the one common key found, e.g. REF_energy)")
    group.add_argument("--unit", action="append", metavar="LABEL=UNIT",
                       help="unit of a label or of lengths in the file, e.g. energy=kcal/mol forces=kcal/mol/Å "
                            "length=bohr (repeatable; default: units stored in the file or documented for its "
                            "layout, eV and Å for ASE files; an .npz that states none needs it)")
    group.add_argument("--extra", action="append", metavar="NAME=KEY",
                       help="an extra per-structure scalar label to carry, unconverted (repeatable)")
    group.add_argument("--format", help="ASE file format, when the extension does not tell")


# ------------------------------------------------------------------------------------- commands
def cmd_data_info(args: argparse.Namespace) -> int:
    from localframe.data import info, sources

    summary = info.summarize(sources.load(args.source, **_source_options(args)))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        info.render(summary)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from localframe.reference import label_file

    labelled = label_file(args.input, args.output, progress=not args.quiet, workers=args.workers,
                          client=args.scheduler)
    print(f"wrote {len(labelled)} structures to {args.output}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from localframe.reference import sample

    sample(
        args.input, args.output, temperature=args.temperature, frames=args.frames, timestep=args.timestep,
        interval=args.interval, seed=args.seed, progress=not args.quiet,
    )
    print(f"wrote {args.frames} frames to {args.output}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Coordinate-denoising pretraining: the train command with pretrain=True."""
    return cmd_train(args, pretrain=True)


def cmd_train(args: argparse.Namespace, pretrain: bool = False) -> int:
    from localframe.train import config as configuration
    from localframe.allocator import apply_default

    apply_default()
    from localframe.train.run import train

    if args.resume:
        if args.config:
            args.overrides = [args.config, *args.overrides]  # RUN_DIR given: everything else overrides
        cfg = configuration.load(os.path.join(args.resume, "config.yaml"), args.overrides)
        cfg.run_dir = args.resume
    else:
        if not args.config:
            from localframe.errors import InputError

            raise InputError("a config file is required (or --resume RUN_DIR)")
        cfg = configuration.load(args.config, args.overrides)
    result = train(cfg, resume=bool(args.resume), progress=not args.quiet, pretrain=pretrain)
    if result and pretrain:
        print(f"pretrained {result['steps']} steps; fine-tune with model.init={cfg.run_dir}/model.pt")
    elif result:
        _print_result(result, cfg.run_dir)
    return 0


def _print_result(result: dict, run_dir: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not result.get("test"):
        console.print(f"no test split: every structure went to training or validation; test the model with "
                      f"'localframe evaluate {run_dir}/model.pt DATA'")
        console.print(f"run directory: {run_dir}")
        return
    table = Table(title=f"test split ({result.get('n_test', 0)} structures), {result['model']}, "
                        f"{result['train_seconds']:.0f} s of training")
    for col in ("label", "MAE", "RMSE", "unit"):
        table.add_column(col, justify="left" if col in ("label", "unit") else "right")
    for label, m in result.get("test", {}).items():
        table.add_row(label, f"{m['mae']:.4g}", f"{m['rmse']:.4g}", m["unit"])
    console.print(table)
    console.print(f"run directory: {run_dir} (model.pt, metrics.csv, test_metrics.json, learning_curve.png, parity.png)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from localframe.train.run import evaluate
    from localframe.allocator import apply_default

    apply_default()

    result = evaluate(args.model, args.data, out=args.out, batch_size=args.batch_size,
                      allow_unseen_elements=args.allow_unseen_elements, **_source_options(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for label, m in result["metrics"].items():
            print(f"{label:>16s}  MAE {m['mae']:.5g}  RMSE {m['rmse']:.5g}  {m['unit']}  ({m['count']} values)")
        if args.out:
            print(f"wrote {args.out}/metrics.json and {args.out}/parity.png")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from localframe.quickstart import run

    return run(args.out, frames=args.frames, seed=args.seed, minutes=args.minutes, model=args.model)


def _calculator(args: argparse.Namespace, skin: float = 0.0):
    from localframe.calculator import Calculator

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return Calculator(args.model, device=args.device, dtype=args.dtype, skin=skin, compile=args.compile,
                      allow_unseen_elements=args.allow_unseen_elements)


def _structure_and_calculator(args: argparse.Namespace, skin: float = 0.0):
    from localframe.md import read_structure

    atoms = read_structure(args.structure, index=args.index)
    calc = _calculator(args, skin)
    calc.check_elements(atoms, source=args.structure if args.index == "-1" else f"{args.structure}[{args.index}]")
    return atoms, calc


def cmd_md(args: argparse.Namespace) -> int:
    from localframe.md import run_md
    from localframe.allocator import apply_default

    apply_default()

    options = dict(ensemble=args.ensemble, temperature=args.temperature, timestep=args.timestep, steps=args.steps,
                   traj=args.traj, log=args.log, seed=args.seed, progress=not args.quiet,
                   max_uncertainty=args.max_uncertainty, thermostat=args.thermostat, friction=args.friction,
                   taut=args.taut, pressure=args.pressure, taup=args.taup, npt_cell=args.npt_cell,
                   interval=args.interval, restart=args.restart)
    if args.replicas is not None:
        return _md_replicas(args, options)
    atoms, calc = _structure_and_calculator(args, args.skin)
    summary = run_md(calc, atoms, **options)
    print(f"{summary['steps']} steps ({summary['time_ps']:g} ps) at {summary['steps_per_second']:.1f} steps/s; "
          f"T {summary['temperature_mean']:.1f} ± {summary['temperature_std']:.1f} K; "
          f"wrote {summary['frames']} frames to {args.traj}" + (f" and the log {args.log}" if args.log else ""))
    if summary["energy_drift"] is not None:
        print(f"total energy drift {summary['energy_drift']:.3g} eV/atom/ps")
    return 0


def _md_replicas(args: argparse.Namespace, options: dict) -> int:
    from localframe.md import read_structures, run_replicas
    from localframe.md.replicas import replica_path

    frames = read_structures(args.structure, index=args.index)
    calc = _calculator(args, args.skin)
    for k, atoms in enumerate(frames):
        calc.check_elements(atoms, source=args.structure, index=k if len(frames) > 1 else None)
    result = run_replicas(calc, frames, args.replicas, **options)
    last = args.replicas - 1
    files = [f"{replica_path(name, 0, args.replicas)} .. {replica_path(name, last, args.replicas).name}"
             for name in (args.traj, args.log) if name]
    print(f"{args.replicas} replicas from {len(frames)} structure(s), {result['replica_steps']} steps in all at "
          f"{result['steps_per_second']:.1f} replica-steps/s; wrote {' and '.join(files)}")
    for message in result["stopped"]:
        print(f"localframe md: error: {message}", file=sys.stderr)
    return EXIT_INPUT if result["stopped"] else 0


def cmd_relax(args: argparse.Namespace) -> int:
    from localframe.md import relax

    atoms, calc = _structure_and_calculator(args)
    result = relax(
        calc, atoms, fmax=args.fmax, optimizer=args.optimizer, steps=args.steps,
        cell=False if args.fix_cell else None, pressure=args.pressure, out=args.out, traj=args.traj,
        progress=not args.quiet,
    )
    state = "converged" if result["converged"] else "NOT converged"
    print(f"{state} after {result['steps']} steps: E {result['energy']:.6f} eV, fmax {result['fmax']:.4f} eV/Å; "
          f"wrote {args.out}")
    return 0 if result["converged"] else 1


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="+", help="model file (RUN_DIR/model.pt); several files make a committee")
    parser.add_argument("structure", help="any ASE-readable structure file")
    parser.add_argument("--index", default="-1", help="structure in the file (ASE index, default -1: the last)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--compile", action="store_true", help="compiled model: one fixed graph for energy and forces (AOTInductor; the first call compiles, then cached)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--allow-unseen-elements", action="store_true",
                        help="run even if the structure has elements the model was not trained on")


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(item.strip() for item in text.split(",") if item.strip()) if text else None


def _read_notes(path: str | None) -> str | None:
    from localframe.errors import InputError

    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise InputError(f"cannot read the notes file: {err.strerror}", path[:200]) from None


def cmd_export(args: argparse.Namespace) -> int:
    from localframe.interop.metatomic import export_metatomic

    elements = tuple(int(z) for z in args.elements.split(",")) if args.elements else None
    path = export_metatomic(args.model, args.out, dtype=args.dtype, elements=elements)
    print(f"wrote {path} (metatomic, {args.dtype}); load it with metatomic_ase.MetatomicCalculator('{path}')")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from localframe import bench

    options = bench.Options(
        suites=() if args.report_only else (_names(args.suite) or bench.SUITES), models=_names(args.models),
        quick=args.quick, threads=args.threads, dtype=args.dtype, out=args.out, report=args.report,
        warmup=args.warmup, repeats=args.repeats,
        sizes=tuple(int(n) for n in _names(args.sizes)) if args.sizes else None, time_cap_s=args.time_cap,
        max_memory_gib=args.max_memory_gib, xtb=not args.no_xtb, xtb_cap_s=args.xtb_cap, allocator=args.allocator,
        tasks=_names(args.tasks) or bench.TASKS, budget_minutes=args.budget_minutes, seeds=args.seeds,
        n_train=args.n_train, n_test=args.n_test, md_replicas=args.md_replicas, md_rounds=args.md_rounds,
        md_seconds=args.md_seconds, md_compile=not args.md_no_compile, md_device=args.md_device, profile=_names(args.profile) or (),
        notes=_read_notes(args.notes), command="localframe " + " ".join(sys.argv[1:]),
    )
    written = bench.run(options)
    for path in written["results"]:
        print(f"wrote {path}")
    if "report" in written:
        print(f"wrote {written['report']}")
    return 0


def cmd_generate_train(args: argparse.Namespace) -> int:
    from localframe.generate import train

    result = train.train(train.load_config(args.config, args.overrides), progress=not args.quiet)
    print(f"{result['steps']} steps ({result['epochs']:.2f} epochs of {result['n_train']} molecules) in "
          f"{result['seconds']:.0f} s; QM9 molecules dropped from the split: {result['dropped']}; wrote {result['model']}")
    return 0


def cmd_generate_sample(args: argparse.Namespace) -> int:
    from localframe.generate.sample import sample

    r = sample(args.model, args.n, args.steps, args.out, seed=args.seed, batch_size=args.batch_size,
               threads=args.threads, progress=not args.quiet, condition=dict(args.condition) if args.condition else None,
               fragment=args.fragment, add=args.add, resample=args.resample, separation=args.separation,
               device=args.device)
    print(f"wrote {r['n']} molecules to {r['out']} ({r['steps']} steps, {r['molecules_per_second']:.2f} molecules/s)")
    if r["failed"]:
        print(f"{r['failed']} of {r['n']} samples failed ({'; '.join(r['failed_reasons'])}): written as empty records "
              f"marked failed, counted as invalid by 'generate evaluate'")
    return 0


def cmd_generate_evaluate(args: argparse.Namespace) -> int:
    from localframe.generate import metrics

    result = metrics.evaluate_file(args.file, reference=args.reference, novelty=not args.no_novelty, strain=args.strain,
                                   posebusters=args.posebusters, progress=not args.quiet)
    text = None if args.json else metrics.render(result)
    if args.condition_model:
        from localframe.generate import condition

        result["condition"] = condition.evaluate(args.file, args.condition_model)
        text = text and text + "\n\n" + condition.render(result["condition"])
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


def _name_value(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name.strip() or number is None:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER (e.g. alpha=70.0), got {text!r}")
    return name.strip(), number


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="3D molecule generation: train, sample, evaluate (EDM, flow matching)")
    g = p.add_subparsers(dest="generate_command", metavar="ACTION", required=True)
    q = g.add_parser("train", help="train a generative model from a YAML config (see configs/generate_qm9.yaml)")
    q.add_argument("config", help="YAML config")
    q.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. train.minutes=60 process=edm")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_generate_train)
    q = g.add_parser("sample", help="sample molecules from a generative model file into an SDF file")
    q.add_argument("model", help="RUN_DIR/model.pt of 'localframe generate train', or the name of a model "
                                 "the package ships (docs/generation.md)")
    q.add_argument("--n", type=int, default=1000, help="molecules (default 1000)")
    q.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    q.add_argument("--out", default="mols.sdf", help="SDF file (default mols.sdf)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--batch-size", type=int, default=100, help="molecules per batch (default 100)")
    q.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    q.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    q.add_argument("--condition", type=_name_value, action="append", metavar="NAME=VALUE",
                   help="property of a conditioned model, e.g. alpha=70.0 (default: (atom count, property) "
                        "pairs drawn from the training molecules)")
    q.add_argument("--fragment", metavar="FRAG.sdf|FRAG.xyz",
                   help="inpainting: complete this molecule, its atoms kept exactly (first in every sample)")
    q.add_argument("--add", type=int, help="atoms to add to the fragment (default: sizes from the histogram)")
    q.add_argument("--resample", type=int, default=1, help="RePaint resampling: repeat each step R times (default 1)")
    q.add_argument("--separation", action="store_true",
                   help="push apart atoms closer than 0.75 x the sum of their covalent radii after every step")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_generate_sample)
    q = g.add_parser("evaluate", help="stability (EDM and valency tables), validity, connectivity, uniqueness, novelty, "
                                      "GFN2-xTB strain, PoseBusters checks")
    q.add_argument("file", help="SDF file with 3D coordinates (bonds and charges read from it)")
    q.add_argument("--reference", type=int, default=1000,
                   help="QM9 training molecules for the reference rows (default 1000; 0: none)")
    q.add_argument("--no-novelty", action="store_true", help="skip the training SMILES (no QM9 needed)")
    q.add_argument("--strain", type=int, default=20, metavar="N",
                   help="GFN2-xTB relaxation (tblite, one thread) of the first N RDKit-valid molecules and of N QM9 "
                        "reference molecules: median ΔE = E(generated) - E(relaxed) and RMSD (default 20; 0: off; QM9 "
                        "molecules ~1-4 s each on a shared 2-core machine, far-from-minimum samples up to minutes)")
    q.add_argument("--posebusters", type=int, default=20, metavar="N",
                   help="PoseBusters geometry checks (mol config) of the first N RDKit-valid molecules and of N QM9 "
                        "reference molecules (default 20; 0: off; ~2-6 s per molecule on a shared 2-core machine, some "
                        "over a minute)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--json", action="store_true", help="print JSON (with each molecule's strain)")
    q.add_argument("--condition-model", metavar="REGRESSOR.pt",
                   help="property regressor (localframe train, other half of QM9): MAE of requested vs predicted "
                        "property beside the random and number-of-atoms baselines (docs/generation.md)")
    q.set_defaults(func=cmd_generate_evaluate)


# ------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from localframe import __version__

    parser = argparse.ArgumentParser(prog="localframe", description="Local-frame equivariant models for 3D molecules and materials.")
    parser.add_argument("--version", action="version", version=f"localframe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("quickstart", help="the main job, no download: GFN2-xTB data, training, evaluation, MD")
    p.add_argument("--out", default="quickstart", help="output folder (default: ./quickstart)")
    p.add_argument("--frames", type=int, default=500, help="frames of the ethanol reference trajectory (default 500)")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget in minutes (default 4)")
    p.add_argument("--model", default="leftnet", help="model to train (default leftnet)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("data", help="inspect data sources")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("info", help="structures, elements, atoms per structure, label statistics and units")
    q.add_argument("source", help="'qm9', an MD17-style .npz file, or any ASE-readable file")
    q.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_source_options(q)
    q.set_defaults(func=cmd_data_info)

    p = sub.add_parser("label", help="add GFN2-xTB energies, forces (and stress for periodic cells) to every structure")
    p.add_argument("input", help="any ASE-readable file")
    p.add_argument("output", help="extxyz file to write; a rerun continues a killed run's output")
    p.add_argument("--workers", type=int, default=1, help="parallel processes on this machine (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="label on a Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("sample", help="GFN2-xTB Langevin MD from a SMILES or a structure file -> MD17-style extxyz")
    p.add_argument("input", metavar="SMILES_OR_FILE")
    p.add_argument("output", help="extxyz file to write (frames appear in OUTPUT's .partial file while it runs)")
    p.add_argument("--temperature", type=float, default=500.0, help="K (default 500)")
    p.add_argument("--frames", type=int, default=200, help="frames to write (default 200)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--interval", type=int, default=20, help="MD steps between written frames (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train", help="train a model from a YAML config; section.key=value overrides")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. train.max_time=20 model.name=schnet")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="coordinate-denoising pretraining from a training config (no labels needed; "
                       "DeNS needs forces)")
    p.add_argument("config", nargs="?", help="YAML config (see configs/); train.denoise_sigma sets the noise, "
                   "train.denoise_forces=true train.denoise_fraction=0.5 makes it DeNS, data.train_offset (QM9) "
                   "keeps the fine-tuning molecules out")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. train.max_time=20")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="MAE and RMSE of a model file on a data source, with a parity plot")
    p.add_argument("model", help="model file (RUN_DIR/model.pt)")
    p.add_argument("data", help="'qm9', an .npz or any ASE-readable file")
    p.add_argument("--out", help="folder for metrics.json and parity.png")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--allow-unseen-elements", action="store_true",
                   help="evaluate even structures with elements the model was not trained on")
    _add_source_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("md", help="molecular dynamics with a model file or a committee (NVE, NVT, NPT)")
    _add_model_options(p)
    p.add_argument("--ensemble", choices=("nve", "nvt", "npt"), default="nvt", help="default nvt")
    p.add_argument("--thermostat", choices=("langevin", "bussi", "nose-hoover"), default="langevin",
                   help="nvt thermostat (default langevin)")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300; initial velocities and target)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--steps", type=int, default=1000, help="MD steps to run (default 1000; more steps with --restart)")
    p.add_argument("--traj", default="md.extxyz", help="extended XYZ trajectory (default md.extxyz)")
    p.add_argument("--log", help="CSV log of energies and temperature")
    p.add_argument("--interval", type=int, default=10, help="steps between written frames and log lines (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="continue from the last frame of --traj, appending")
    p.add_argument("--max-uncertainty", type=float, metavar="EV_PER_A",
                   help="stop when the committee force spread of an atom exceeds this (eV/Å)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--taut", type=float, help="Bussi/Nosé-Hoover/MTK thermostat time, fs (default 100 timesteps)")
    p.add_argument("--pressure", type=float, default=0.0, help="npt pressure, GPa (default 0)")
    p.add_argument("--taup", type=float, help="npt barostat time, fs (default 1000 timesteps)")
    p.add_argument("--npt-cell", choices=("isotropic", "full"), default="isotropic", help="npt cell fluctuations")
    p.add_argument("--skin", type=float, default=0.0, help="Verlet skin of the neighbour list, Å: reuse the list "
                   "while no atom moved more than skin/2 (default 0: a fresh list every step)")
    p.add_argument("--replicas", type=int, metavar="N", help="N independent trajectories, one batched model call per "
                   "step: replica r starts from frame r mod M of the --index selection (e.g. --index :) with seed "
                   "SEED+r, and writes TRAJ_r000.extxyz, LOG_r000.csv, ... (docs/md.md)")
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("export", help="write a model file as one file other engines load (metatomic TorchScript)")
    p.add_argument("model", help="model file (RUN_DIR/model.pt)")
    p.add_argument("out", help="file to write, e.g. model-metatomic.pt")
    p.add_argument("--format", choices=("metatomic",), default="metatomic", help="default metatomic")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="default float64")
    p.add_argument("--elements", metavar="Z,Z,...", help="atomic numbers accepted (default: those the model was trained on)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("relax", help="relax a structure (and a periodic cell) with a model file or a committee")
    _add_model_options(p)
    p.add_argument("--fmax", type=float, default=0.05, help="force convergence, eV/Å (default 0.05)")
    p.add_argument("--optimizer", choices=("fire", "bfgs"), default="fire", help="default fire")
    p.add_argument("--steps", type=int, default=1000, help="most optimizer steps (default 1000)")
    p.add_argument("--out", default="relaxed.extxyz", help="relaxed structure (default relaxed.extxyz)")
    p.add_argument("--traj", help="extended XYZ file of every step")
    p.add_argument("--fix-cell", action="store_true", help="keep the cell of a periodic structure fixed")
    p.add_argument("--pressure", type=float, default=0.0, help="pressure for the cell relaxation, GPa (default 0)")
    p.set_defaults(func=cmd_relax)

    p = sub.add_parser("bench", help="speed, scaling, accuracy and N-body benchmarks against peers; writes a report")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (CI: minutes, no peers needed)")
    p.add_argument("--suite", metavar="NAMES", help="comma-separated: speed,scaling,accuracy,nbody,md (default: all)")
    p.add_argument("--models", metavar="NAMES", help="comma-separated localframe models, model presets "
                   "(e.g. leftnet-lite), peers (pyg_schnet, pyg_dimenet++, pyg_visnet, mace; accuracy suite: mace-own, MACE trained by mace_run_train) "
                   "and trained model files (e.g. runs/x/model.pt, as trained); default: all models and peers")
    p.add_argument("--threads", type=int, default=1, help="torch (and xTB) threads for every measurement (default 1)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--out", default="runs/bench", help="folder for the JSON results (default runs/bench)")
    p.add_argument("--report", metavar="PATH", help="markdown report to (re)generate, e.g. docs/benchmarks.md")
    p.add_argument("--report-only", action="store_true", help="run no suite (profiles still run with --profile); regenerate the report from --out")
    p.add_argument("--notes", metavar="FILE", help="markdown appended to the report's targets section")
    g = p.add_argument_group("speed")
    g.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default 3)")
    g.add_argument("--repeats", type=int, default=10, help="timed calls (default 10)")
    g.add_argument("--profile", metavar="NAMES", help="also profile these models (top operators), comma-separated")
    g = p.add_argument_group("scaling")
    g.add_argument("--sizes", metavar="N,N,...", help="box sizes in atoms (default 64 to 97,336)")
    g.add_argument("--time-cap", type=float, default=180.0, help="skip sizes predicted to take longer (s, default 180)")
    g.add_argument("--max-memory-gib", type=float, default=6.0, help="skip sizes predicted to need more (default 6)")
    g.add_argument("--xtb-cap", type=float, default=300.0, help="time cap of one GFN2-xTB call (s, default 300)")
    g.add_argument("--no-xtb", action="store_true", help="no GFN2-xTB reference timings")
    g.add_argument("--allocator", default="default", choices=("default", "tuned"),
                   help="'tuned': glibc malloc without mmap or trimming (results saved as scaling-tuned)")
    g = p.add_argument_group("md (MD steps per second; models unless --models: the quickstart's LEFTNet, schnet, mace)")
    g.add_argument("--md-replicas", type=int, default=64, help="replicas of the batched runs (default 64)")
    g.add_argument("--md-rounds", type=int, default=5, help="interleaved rounds of every engine (default 5)")
    g.add_argument("--md-seconds", type=float, default=2.0, help="about this long per timed run (default 2 s)")
    g.add_argument("--md-no-compile", action="store_true", help="no compiled (fixed-graph) runs: no compilation")
    g.add_argument("--md-device", default="cpu", help="where the models run, e.g. cuda (default cpu; GFN2-xTB runs on the CPU)")
    g = p.add_argument_group("accuracy")
    g.add_argument("--tasks", metavar="NAMES", help="comma-separated: qm9,md17 (default: both)")
    g.add_argument("--budget-minutes", type=float, default=30.0, help="training minutes per model and seed (default 30)")
    g.add_argument("--seeds", type=int, default=3, help="seeds per model (default 3)")
    g.add_argument("--n-train", type=int, help="training structures (default: qm9 10,000; md17 950)")
    g.add_argument("--n-test", type=int, help="test structures (default: all the task has)")
    p.set_defaults(func=cmd_bench)
    _add_generate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from localframe.errors import InputError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # section.key=value overrides may stand anywhere on a train command line, also after flags
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    if extra and (getattr(args, "func", None) not in (cmd_train, cmd_pretrain, cmd_generate_train) or len(overrides) != len(extra)):
        parser.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    try:
        return args.func(args)
    except InputError as err:
        print(f"localframe {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"localframe {args.command}: error: {err.filename}: {err.strerror}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"localframe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
