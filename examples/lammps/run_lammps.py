"""Run a LAMMPS input through LAMMPS' Python module, so that the Python running it (your
virtual environment, editable installs included) is the one that loads tfn_md:

    python run_lammps.py in.cu -var steps 100
    mpiexec -n 2 python run_lammps.py in.cu

Arguments after the input file go to LAMMPS as command-line arguments.
"""

import sys

import lammps
import lammps.mliap

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    lmp = lammps.lammps(cmdargs=sys.argv[2:])
    lammps.mliap.activate_mliappy(lmp)  # the ML-IAP Python models, when LAMMPS is a module
    lmp.file(sys.argv[1])
    lmp.close()
