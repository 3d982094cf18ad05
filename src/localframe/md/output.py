"""MD output: the trajectory (extended XYZ) and CSV log, written and flushed frame by frame, and the
fields of the progress line.

Every frame holds positions, ``momenta`` (ASE units), energy, forces, stress when computed,
``step``, ``time_fs``, ``temperature_K`` and, for a committee, ``energy_std`` (eV) and per-atom
``forces_std`` (eV/Å). One write per frame: a killed run leaves whole frames.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from ase import Atoms, units

from localframe.md.checks import CARRIED_INFO


class Output:
    """Trajectory (extended XYZ) and CSV log, written and flushed frame by frame."""

    def __init__(self, traj, log, append: bool, ensemble: str, committee: bool):
        self.traj_path, self.log_path = traj, log
        self.append, self.npt, self.committee = append, ensemble == "npt", committee
        self.traj = self.log = None
        self.csv = None

    def __enter__(self) -> "Output":
        if self.traj_path is not None:
            Path(self.traj_path).parent.mkdir(parents=True, exist_ok=True)
            self.traj = open(self.traj_path, "a" if self.append else "w", encoding="utf-8")
        if self.log_path is not None:
            Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
            header = not (self.append and Path(self.log_path).is_file() and Path(self.log_path).stat().st_size)
            self.log = open(self.log_path, "a" if self.append else "w", encoding="utf-8", newline="")
            self.csv = csv.writer(self.log)
            if header:
                columns = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
                if self.npt:
                    columns += ["volume_A3", "pressure_GPa"]
                if self.committee:
                    columns += ["energy_std_eV", "max_forces_std_eV_per_A"]
                self.csv.writerow(columns)
                self.log.flush()
        return self

    def __exit__(self, *exc) -> None:
        for handle in (self.traj, self.log):
            if handle is not None:
                handle.close()

    def write(self, atoms: Atoms, step: int, timestep: float, observed: dict) -> int:
        """Write one frame and one log line; returns the number of frames written (0 or 1)."""
        results = atoms.calc.results
        if self.log is not None:
            row = [step, f"{step * timestep:.6g}", f"{observed['epot']:.10g}", f"{observed['ekin']:.10g}",
                   f"{observed['epot'] + observed['ekin']:.10g}", f"{observed['temperature']:.6g}"]
            if self.npt:
                volume = atoms.get_volume()
                stress = atoms.get_stress(include_ideal_gas=True)
                row += [f"{volume:.8g}", f"{-stress[:3].mean() / units.GPa:.6g}"]
            if self.committee:
                row += [f"{results.get('energy_std', float('nan')):.6g}", f"{observed['spread']:.6g}"]
            self.csv.writerow(row)
            self.log.flush()
        if self.traj is None:
            return 0
        import ase.io
        from ase.calculators.singlepoint import SinglePointCalculator

        frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.set_momenta(atoms.get_momenta())
        frame.info.update(step=int(step), time_fs=float(step * timestep), temperature_K=float(observed["temperature"]))
        frame.info.update({k: v for k, v in atoms.info.items() if k in CARRIED_INFO})
        if "energy_std" in results:
            frame.info["energy_std"] = float(results["energy_std"])
        if "forces_std" in results:
            frame.arrays["forces_std"] = np.asarray(results["forces_std"], dtype=np.float64)
        labels = {k: results[k] for k in ("energy", "forces", "stress") if k in results}
        frame.calc = SinglePointCalculator(frame, **labels)
        text = io.StringIO()
        ase.io.write(text, frame, format="extxyz")
        self.traj.write(text.getvalue())  # one write per frame: a killed run leaves whole frames
        self.traj.flush()
        return 1


def progress_fields(observed: dict) -> dict[str, str]:
    """What the progress bar shows of an MD step."""
    fields = {"T": f"{observed['temperature']:.0f} K", "Epot": f"{observed['epot']:.4f} eV",
              "Etot": f"{observed['epot'] + observed['ekin']:.4f} eV"}
    if observed.get("spread") is not None:
        fields["σF"] = f"{observed['spread']:.3f} eV/Å"
    return fields
