"""Other MD engines that run a TFN potential: i-PI (a socket driver, path-integral MD),
OpenMM (through openmm-ml's ASE potential) and torch-sim (a batched ``ModelInterface``).

Each engine is an optional dependency (``pip install "tfn_md[ipi]"``, ``[openmm]``,
``[torchsim]``); its module imports it only when used and says which extra to install
when it is missing. ASE's own integrators (``tfn-md md``) live in :mod:`tfn_md.ase`.
"""
