"""Generation of 3D molecules: QM9 data with bonds, noise processes, denoisers, sampling and metrics.

``data`` (QM9 molecules with bonds and charges), ``molecule`` (one molecule, SDF in and out),
``tables`` (the scorers' bond and valency tables), ``metrics`` (``localframe generate evaluate``),
``schedule`` (EDM's noise schedule), ``edm`` and ``flow`` (the two processes behind one interface,
``process``), ``denoiser`` (any representation of :mod:`localframe.models` as a denoiser),
``train`` and ``sample`` (what the CLI calls), ``inpaint`` (completing a fixed fragment, guided
sampling), ``separation`` (the bonded minimum distance: projection, penalty, metric) and
``condition`` (EDM's evaluation of a property-conditioned generator); ``strain`` (GFN2-xTB
relaxation: ΔE and RMSD) and ``geometry_checks`` (PoseBusters) are the costly metrics.
"""
