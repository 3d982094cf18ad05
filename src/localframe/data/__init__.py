"""Data layer: the batch structure, neighbor lists, units and readers for every data source."""

from localframe.data.batch import AtomsBatch
from localframe.data.neighbors import neighbor_pairs

__all__ = ["AtomsBatch", "neighbor_pairs"]
