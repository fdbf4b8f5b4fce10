# fcc copper with the shipped cu-emt potential: NVT at 600 K, then NPT at 600 K, 0 bar.
#   tfn-md export-lammps cu-emt -o cu-emt.mliap
#   lmp -in in.cu                       (or: mpiexec -n 2 lmp -in in.cu)
# Variables: -var steps N (default 1000 per stage), -var n N (N x N x N cubic cells)
variable        steps index 1000
variable        n index 6
variable        model index cu-emt.mliap

units           metal
atom_style      atomic
boundary        p p p
newton          on
lattice         fcc 3.61
region          box block 0 ${n} 0 ${n} 0 ${n}
create_box      1 box
create_atoms    1 box
mass            1 63.546

neighbor        2.0 bin
comm_modify     cutoff 12.0          # >= layers (2) x cutoff (5 A) + neighbor skin (2 A)
pair_style      mliap unified ${model} 1
pair_coeff      * * Cu

velocity        all create 1200.0 4928459 mom yes rot yes dist gaussian
timestep        0.002                # ps: 2 fs
thermo_style    custom step temp pe etotal press vol
thermo          50

fix             nvt all nvt temp 600.0 600.0 0.1
run             ${steps}
unfix           nvt
fix             npt all npt temp 600.0 600.0 0.1 iso 0.0 0.0 1.0
run             ${steps}
