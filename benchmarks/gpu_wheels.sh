#!/usr/bin/env bash
# Wheels for the offline GPU check (benchmarks/gpu.sh): tfn_md itself and the dependencies
# that the GPU image lacks, for one Python version, into an ignored folder.
#
#   benchmarks/gpu_wheels.sh [PYTHON_VERSION] [DIR] [--rehearsal]
#
# PYTHON_VERSION: the GPU image's (default 3.12). DIR: default wheels/py<version> (ignored
# by git; `run` carries it with `carry: ["wheels/py312"]`). The image already has torch,
# numpy, scipy, h5py, e3nn and pytest; --rehearsal adds those too (not torch), for the CPU
# rehearsal in a fresh environment that has only torch. Binary wheels only, manylinux
# x86_64, so the folder installs with `pip install --no-index --find-links DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
dir=${2:-wheels/py${version/./}}
rehearsal=${3:-}
mkdir -p "$dir"
# what ase (numpy, scipy, matplotlib and its own), vesin and tqdm need, without torch
lacking="ase matplotlib contourpy cycler fonttools kiwisolver packaging pillow pyparsing
python-dateutil six tzdata vesin tqdm"
image="numpy scipy h5py pytest iniconfig pluggy pygments e3nn opt_einsum opt_einsum_fx"
pkgs=$lacking
[ "$rehearsal" = "--rehearsal" ] && pkgs="$lacking $image"
# shellcheck disable=SC2086
python -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir" \
  --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any $pkgs
python -m pip wheel --quiet --no-deps --wheel-dir "$dir" .  # built here, with network
du -sh "$dir"
ls "$dir"
