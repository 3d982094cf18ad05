"""Reference labels from semi-empirical quantum chemistry (GFN2-xTB via tblite).

:func:`label` and :func:`label_file` compute energies (eV), forces (eV/Å) and stresses (eV/Å³)
for given structures; :func:`label_file` writes as it goes, resumes a killed run and labels in
parallel processes or on a Dask cluster. :func:`sample` generates an MD17-style data set by
Langevin molecular dynamics from a SMILES string or a structure file.
"""

from localframe.reference.labelling import label_file
from localframe.reference.xtb import METHODS, label, sample

__all__ = ["METHODS", "label", "label_file", "sample"]
