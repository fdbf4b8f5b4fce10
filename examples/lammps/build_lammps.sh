#!/usr/bin/env bash
# Build a LAMMPS that can run tfn_md potentials: ML-IAP with Python support
# (`pair_style mliap unified`), MPI, as a shared library with its Python module.
#
# Source: Debian's source package of LAMMPS 20250204 (trixie), fetched with
# its own apt state (the system's apt sources are left alone). MPI: the
# `mpich` wheel from PyPI. Nothing is installed system-wide.
#
#   examples/lammps/build_lammps.sh            # build once, reuse afterwards
#   eval "$(examples/lammps/build_lammps.sh --env)"   # PYTHONPATH, LD_LIBRARY_PATH, PATH
#
# The result lives outside the clone, in $TFN_MD_LAMMPS (default
# ~/.cache/tfn_md/lammps-20250204-b1-pyX.Y), so it is built once per machine.
# PYTHON (default: python3) must be the Python (version) that will run tfn_md:
# LAMMPS links its libpython. Build time: about 15 minutes on 2 idle cores.
# Needs: a C++ compiler, cmake >= 3.16, curl, patch, apt-get (for the source only).
#
# --env prints the variables that make `import lammps` (and mpiexec) work, plus,
# inside a virtual environment, its site-packages on PYTHONPATH so that the
# standalone `lmp` binary's embedded Python finds tfn_md too.
set -euo pipefail

VERSION=20250204
BUILD=1  # bump when this script's build changes (a new folder; old builds are not reused)
PY=${PYTHON:-python3}
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PREFIX=${TFN_MD_LAMMPS:-$HOME/.cache/tfn_md/lammps-$VERSION-b$BUILD-py$PYVER}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JOBS=${JOBS:-$(nproc)}

env_lines() {
    local sitepkgs=""
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then
        sitepkgs=":$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    fi
    echo "export PYTHONPATH=\"$PREFIX/python$sitepkgs${PYTHONPATH:+:$PYTHONPATH}\""
    echo "export LD_LIBRARY_PATH=\"$PREFIX/lib:$PREFIX/mpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\""
    echo "export PATH=\"$PREFIX/bin${PATH:+:$PATH}\""
}

# $PREFIX/bin: lmp and the MPI launchers only (not the build venv's python, which
# would shadow the user's on PATH)
link_tools() {
    mkdir -p "$PREFIX/bin"
    for tool in "$PREFIX"/mpi/bin/mpiexec* "$PREFIX"/mpi/bin/mpirun "$PREFIX"/mpi/bin/hydra_*; do
        [[ -e "$tool" ]] && ln -sf "$tool" "$PREFIX/bin/"
    done
    return 0
}
if [[ "${1:-}" == "--env" ]]; then env_lines; exit 0; fi

if [[ -f "$PREFIX/BUILT" ]]; then
    link_tools
    echo "LAMMPS $VERSION with ML-IAP/Python already built in $PREFIX"
    exit 0
fi

mkdir -p "$PREFIX"
WORK="$PREFIX/work"
rm -rf "$WORK"; mkdir -p "$WORK"
cd "$WORK"

echo "== build tools (mpich, cython) in $PREFIX/mpi"
"$PY" -m venv "$PREFIX/mpi"
"$PREFIX/mpi/bin/pip" install -q "mpich>=4,<5" "cython>=3"

echo "== LAMMPS $VERSION source (Debian trixie source package)"
APT="$WORK/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/etc"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" > "$APT/etc/sources.list"
APTOPTS=(-o Dir::State="$APT" -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT"
         -o Dir::Etc::SourceList="$APT/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${APTOPTS[@]}" update -q
SRCVER=$(apt-cache "${APTOPTS[@]}" showsrc lammps | sed -n "s/^Version: \($VERSION[^ ]*\)/\1/p" | head -1)
[[ -n "$SRCVER" ]] || { echo "Debian trixie has no LAMMPS $VERSION source package" >&2; exit 1; }
# The upstream tarball, checked against the SHA256 of the signed Sources index
# (Debian's patches only concern packaging; the mirror may lack the .dsc).
apt-get "${APTOPTS[@]}" --print-uris source "lammps=$SRCVER" | grep "orig.tar" > "$WORK/uris"
read -r URI FILE SIZE HASH < "$WORK/uris"
curl -fsSL -o "$WORK/$FILE" "${URI//\'/}"
echo "${HASH#SHA256:}  $WORK/$FILE" | sha256sum -c -
tar -xJf "$WORK/$FILE" -C "$WORK"
SRC=$(find "$WORK" -maxdepth 1 -type d -name "lammps-*" | head -1)
[[ -d "$SRC/cmake" ]] || { echo "no LAMMPS source tree in $WORK" >&2; exit 1; }
# ML-IAP 20250204 sizes one of its arrays (ghost atoms) x (all pairs): 900 GB for 32000
# Cu atoms with ghost neighbour lists. The patch sizes it (ghost atoms) x (pairs per atom).
patch -d "$SRC" -p1 < "$HERE/mliap-firstneigh.patch"

echo "== configure and build (about 15 minutes on 2 cores)"
MPIBIN="$PREFIX/mpi/bin"
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
cmake -S "$SRC/cmake" -B "$WORK/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DCMAKE_C_COMPILER="$MPIBIN/mpicc" -DCMAKE_CXX_COMPILER="$MPIBIN/mpicxx" \
    -DBUILD_MPI=ON -DBUILD_SHARED_LIBS=ON -DLAMMPS_EXCEPTIONS=ON \
    -DPKG_ML-IAP=ON -DPKG_ML-SNAP=ON -DPKG_PYTHON=ON -DMLIAP_ENABLE_PYTHON=ON \
    -DPython_EXECUTABLE="$("$PY" -c 'import sys; print(sys.executable)')" \
    -DCythonize_EXECUTABLE="$MPIBIN/cythonize" \
    -DBUILD_OMP=OFF -DWITH_JPEG=OFF -DWITH_PNG=OFF -DWITH_FFMPEG=OFF -DWITH_GZIP=OFF \
    -DDOWNLOAD_POTENTIALS=OFF -DBUILD_DOC=OFF
cmake --build "$WORK/build" -j "$JOBS"

echo "== install library, binary and Python module into $PREFIX"
mkdir -p "$PREFIX/lib" "$PREFIX/bin" "$PREFIX/python"
cp -a "$WORK/build"/liblammps.so* "$PREFIX/lib/"
cp -a "$WORK/build/lmp" "$PREFIX/bin/"
rm -rf "$PREFIX/python/lammps"
cp -r "$SRC/python/lammps" "$PREFIX/python/lammps"
# the module finds liblammps.so next to itself or on LD_LIBRARY_PATH
ln -sf "$PREFIX"/lib/liblammps.so* "$PREFIX/python/lammps/"

link_tools
echo "== check"
eval "$(env_lines)"
"$PY" - <<'PYEOF'
import lammps
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"])
assert lmp.has_package("ML-IAP") and lmp.has_package("PYTHON"), lmp.installed_packages
print("LAMMPS", lmp.version(), "packages:", " ".join(lmp.installed_packages))
lmp.close()
PYEOF
rm -rf "$WORK"
touch "$PREFIX/BUILT"
echo "LAMMPS built in $PREFIX; use it with: eval \"\$($0 --env)\""
