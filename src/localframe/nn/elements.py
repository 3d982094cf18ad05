"""Element constants shared by embeddings and per-element tables (reference energies, affines)."""

#: Rows of every per-element table: index = atomic number (0 unused, 1 to 118).
N_ELEMENTS = 119
