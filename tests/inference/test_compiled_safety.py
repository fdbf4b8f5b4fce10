"""The compiled path is safe by construction (see :mod:`tfn_md.inference.programs`):

* the torch bug behind the heap corruption, in ten lines, and whether this torch still
  needs the workaround (serial generated code);
* production-sized models and both shipped potentials, compiled in fresh child processes on
  a cold cache with the defaults users get (torch's own thread count, ``compile="auto"``,
  no environment variables) and under 1 thread, against the eager path over 84 MD-like
  calls (64 of them compiled);
* the program cache: a damaged file, a file under another key, a folder that others can
  write to or that another user owns, a new folder's mode, a program that disagrees with
  the eager path, a child process that crashes while compiling.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ethanol, make_model
from tfn_md import TFNCalculator
from tfn_md.inference import programs

ROOT = Path(__file__).resolve().parents[2]


def user_env(**extra) -> dict:
    """The environment a user has: none of the test suite's or thread settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TFN_MD_COMPILE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return {**env, **extra}


# ---- the upstream bug (pytorch/pytorch#191837) ---------------------------------------------

SCATTER = textwrap.dedent("""
    import sys, torch
    torch._inductor.config.cpp.threads = int(sys.argv[1])
    def f(src):  # a scatter-add of a transposed source, as our force and message sums are
        idx = torch.arange(3)
        return src.new_zeros(3, 16, 32).index_put((idx,), src.permute(1, 2, 0), accumulate=True)
    src = torch.randn(32, 3, 16, generator=torch.Generator().manual_seed(0))
    print((torch.compile(f, dynamic=False)(src) - f(src)).abs().max().item(), flush=True)
""")


def scatter_error(threads: int, tmp_path) -> tuple[int | None, float | None]:
    """(exit status, largest error) of the reproduction generated for ``threads``; the
    status is None where it hung (the corrupted heap can deadlock malloc: seen once, a
    child asleep on a futex for minutes)."""
    try:
        run = subprocess.run([sys.executable, "-c", SCATTER, str(threads)],
                             capture_output=True, check=False, text=True, timeout=300,
                             env=user_env(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "ind")))
    except subprocess.TimeoutExpired:
        return None, None
    lines = run.stdout.split()
    return run.returncode, float(lines[-1]) if lines else None


def test_serial_generated_code_is_exact_where_parallel_code_may_not_be(tmp_path):
    rc, err = scatter_error(1, tmp_path)
    assert rc == 0 and err is not None and err < 1e-6, (rc, err)
    rc2, err2 = scatter_error(2, tmp_path)
    needed = rc2 != 0 or err2 is None or err2 > 1e-4
    print(f"torch {torch.__version__}: scatter-add generated for 1 thread: error {err:.1e}; "
          f"for 2 threads: exit status {rc2}, error {err2}: the serial-code workaround is "
          f"{'needed' if needed else 'no longer needed'}")
    assert programs.CODEGEN["cpp.threads"] == 1  # the workaround is in force
    if not needed:
        pytest.skip(f"torch {torch.__version__} generates exact parallel scatter code: "
                    "tfn_md.inference.programs.CODEGEN could be revisited")


# ---- what users run, in fresh processes on a cold cache -------------------------------------

MD_LIKE = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np, torch
    from ase.build import bulk, molecule
    from tfn_md import TFN, TFNCalculator
    warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager fails the run
    report = []
    for case in json.loads(sys.argv[1]):
        if case["system"] == "ethanol":
            atoms, species = molecule("CH3CH2OH"), ["H", "C", "O"]
        else:
            atoms, species = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3), ["Cu"]
        if "potential" in case:
            model = case["potential"]
        else:
            with torch.random.fork_rng():
                torch.manual_seed(1)
                model = TFN(species=species, channels=case["channels"], l_max=2, layers=2,
                            cutoff=5.0, energy_heads=case["heads"])
            model = model.to(getattr(torch, case["dtype"]))
        fast = TFNCalculator(model)  # the defaults: compile="auto", torch's threads
        eager = TFNCalculator(model, compile=False)
        periodic = bool(atoms.pbc.all())
        rng = np.random.default_rng(0)
        velocity = 0.02 * rng.standard_normal(atoms.positions.shape)
        worst = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
        for step in range(84):  # MD-like: small smooth moves, the Verlet list reused
            atoms.positions += velocity
            velocity = 0.9 * velocity + 0.005 * rng.standard_normal(velocity.shape)
            props = ["energy", "forces"] + (["stress"] if periodic else [])
            fast.calculate(atoms, props)
            eager.calculate(atoms, props)
            for name in props:
                err = float(np.max(np.abs(fast.results[name] - eager.results[name])))
                if name == "energy":  # relative
                    err /= max(1.0, abs(eager.results[name]))
                worst[name] = max(worst[name], err)
        report.append({**case, **worst, "threads": torch.get_num_threads(),
                       "programs": fast.engine.compiled.n_programs,
                       "dtype": str(fast.dtype), "atoms": len(atoms)})
    print(json.dumps(report))
""")

CASES = [
    {"potential": "ethanol-gfn2", "system": "ethanol"},
    {"potential": "cu-emt", "system": "cu"},
    {"channels": 32, "heads": 1, "dtype": "float32", "system": "ethanol"},
    {"channels": 64, "heads": 8, "dtype": "float64", "system": "cu"},
]


@pytest.mark.parametrize("threads", ["default", "1"])
def test_production_models_compiled_in_fresh_processes_match_eager(threads, tmp_path):
    env = user_env(TFN_MD_CACHE=str(tmp_path / "cold"),
                   TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    run = subprocess.run([sys.executable, "-c", MD_LIKE, json.dumps(CASES)],
                         capture_output=True, check=False, text=True, env=env)
    assert run.returncode == 0, f"exit status {run.returncode}:\n{run.stderr[-3000:]}"
    for r in json.loads(run.stdout.strip().splitlines()[-1]):
        print(r)
        assert r["programs"] >= 1, r  # the compiled program served the calls after 20
        f32 = r["dtype"] == "torch.float32"
        assert r["forces"] < (2e-4 if f32 else 1e-9), r
        assert r["energy"] < (1e-6 if f32 else 1e-12), r  # relative
        assert r["stress"] < (1e-5 if f32 else 1e-11), r


# ---- the program cache -----------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TFN_MD_CACHE", str(folder))
    return folder


def small_model():
    return make_model(cutoff=5.0, seed=3)


def forces(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_forces()


def test_new_cache_folder_is_private(cache):
    assert programs.safe_cache_dir() == cache
    assert cache.stat().st_mode & 0o777 == 0o700


def test_folder_others_can_write_is_refused(cache):
    cache.mkdir(mode=0o700)
    cache.chmod(0o775)
    calc = TFNCalculator(small_model(), compile=True)
    with pytest.warns(RuntimeWarning, match="can be written by other users"):
        f = forces(calc, ethanol())
    assert calc.engine.compiled.failed and not list(cache.iterdir())
    np.testing.assert_allclose(f, forces(TFNCalculator(small_model(), compile=False),
                                         ethanol()), atol=1e-12)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a folder to another user needs root")
def test_folder_of_another_user_is_refused(cache):
    cache.mkdir(mode=0o700)
    os.chown(cache, 12345, -1)
    with pytest.raises(programs.ProgramError, match="belongs to another user"):
        programs.safe_cache_dir()


def test_damaged_file_and_file_under_another_key_are_not_loaded(cache):
    folder = programs.safe_cache_dir()
    content = b"native code " * 100
    good = folder / f"aaaa.{programs._digest('aaaa', content)}.pt2"
    good.write_bytes(content)
    good.chmod(0o600)
    assert programs._cached(folder, "aaaa") == good
    # the same bytes under another key: the digest binds the key
    (folder / f"bbbb.{programs._digest('aaaa', content)}.pt2").write_bytes(content)
    with pytest.warns(RuntimeWarning, match="damaged or foreign"):
        assert programs._cached(folder, "bbbb") is None
    assert not list(folder.glob("bbbb.*"))  # removed
    good.write_bytes(content[:-7])  # truncated
    with pytest.warns(RuntimeWarning, match="damaged or foreign"):
        assert programs._cached(folder, "aaaa") is None
    assert not good.exists()


def test_damaged_program_is_compiled_again_and_then_used(cache):
    model, atoms = small_model(), ethanol()
    reference = forces(TFNCalculator(model, compile=False), atoms)
    np.testing.assert_allclose(forces(TFNCalculator(model, compile=True), atoms), reference,
                               atol=1e-10)
    (path,) = cache.glob("*.pt2")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    calc = TFNCalculator(model, compile=True)
    with pytest.warns(RuntimeWarning, match="damaged or foreign"):
        f = forces(calc, atoms)
    assert calc.engine.compiled.n_programs == 1 and not calc.engine.compiled.failed
    np.testing.assert_allclose(f, reference, atol=1e-10)
    (new,) = cache.glob("*.pt2")  # compiled again, with a valid digest
    assert programs._cached(cache, new.name.split(".")[0]) == new


def test_program_that_disagrees_with_eager_is_dropped(cache, monkeypatch):
    model, atoms = small_model(), ethanol()
    reference = forces(TFNCalculator(model, compile=False), atoms)
    calc = TFNCalculator(model, compile=True)
    with monkeypatch.context() as m:
        m.setattr(programs, "compare", lambda *args: "made to disagree")
        with pytest.warns(RuntimeWarning, match="disagrees with the eager path"):
            f = forces(calc, atoms)
    np.testing.assert_allclose(f, reference, atol=1e-12)  # the eager result
    assert list(cache.glob("*.rejected")) and not list(cache.glob("*.pt2"))
    moved = atoms.copy()
    moved.positions += 0.01
    forces(calc, moved)  # the same bucket: eager, no second warning
    later = TFNCalculator(model, compile=True)  # another process would not compile it again
    with pytest.warns(RuntimeWarning, match="rejected earlier"):
        forces(later, atoms)
    assert later.engine.compiled.failed


def test_crash_while_compiling_leaves_the_process_alive(cache, monkeypatch, tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("import os\nos.abort()\n")
    monkeypatch.setattr(programs, "WORKER", crash)
    model, atoms = small_model(), ethanol()
    calc = TFNCalculator(model, compile=True)
    with pytest.warns(RuntimeWarning, match="signal 6"):
        f = forces(calc, atoms)
    assert calc.engine.compiled.failed and not list(cache.glob("*.pt2"))
    np.testing.assert_allclose(f, forces(TFNCalculator(model, compile=False), atoms),
                               atol=1e-12)


def test_cache_key_holds_the_build():
    """What the generated code depends on is in the key: Inductor options, ISA, compiler."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    fp = programs.fingerprint(torch.device("cpu"))
    assert json.dumps(programs.CODEGEN, sort_keys=True) in fp
    assert str(pick_vec_isa()) in fp and torch.__version__ in fp
    assert programs._compiler_version() in fp


def test_cache_key_holds_the_source_of_every_module(tmp_path, monkeypatch):
    """An edit to any module a program is traced from (the response in inference/, the
    model core, a LAMMPS rank's program) changes the digest in every program key, so no
    program of older code is loaded."""
    import shutil

    import tfn_md

    root = tmp_path / "tfn_md"
    shutil.copytree(Path(tfn_md.__file__).parent, root,
                    ignore=shutil.ignore_patterns("__pycache__"))
    digests = {programs.digest_of_sources(root)}
    for module in ("inference/response.py", "model.py", "nn/edge_kernel.py",
                   "lammps/local_program.py"):
        with open(root / module, "a") as f:
            f.write("\n# an edit\n")
        digests.add(programs.digest_of_sources(root))
    assert len(digests) == 5
    # and the key of a program holds that digest
    model = make_model(cutoff=4.0)
    isolated = model.isolated_features(True)
    inputs = (torch.zeros(3),)
    key = programs.program_key(model, isolated, inputs, ("response", False))
    monkeypatch.setattr(programs, "source_digest", lambda: b"other source")
    assert programs.program_key(model, isolated, inputs, ("response", False)) != key


def test_trim_cache_removes_least_recently_used_beyond_the_cap(cache, monkeypatch):
    folder = programs.safe_cache_dir()
    paths = []
    for k in range(5):  # 1 MiB each, used at times 0, 10, ... 40
        path = folder / f"k{k}.d.pt2"
        path.write_bytes(b"x" * 2**20)
        os.utime(path, (1000 + 10 * k, 1000 + 10 * k))
        paths.append(path)
    os.utime(paths[0], (2000, 2000))  # the oldest file was used last
    monkeypatch.setenv("TFN_MD_CACHE_MB", "2.5")
    removed = programs.trim_cache(folder, keep=paths[1])
    # least recently used first, sparing paths[1] (kept): 2 MiB left
    assert removed == [paths[2], paths[3], paths[4]]
    assert set(folder.glob("*.pt2")) == {paths[0], paths[1]}
    assert programs.trim_cache(folder, limit=2**20) == [paths[1]]
    assert set(folder.glob("*.pt2")) == {paths[0]}
    for bad in ("lots", "-1", "nan"):  # a warning naming it, and the default cap
        monkeypatch.setenv("TFN_MD_CACHE_MB", bad)
        with pytest.warns(RuntimeWarning, match="TFN_MD_CACHE_MB"):
            assert programs.cache_limit() == programs.CACHE_MB * 2**20


def test_cache_stays_under_its_cap_when_more_programs_are_compiled_than_fit(cache,
                                                                           monkeypatch):
    atoms = ethanol()
    forces(TFNCalculator(make_model(cutoff=5.0, seed=3), compile=True), atoms)
    (first,) = cache.glob("*.pt2")
    cap = 1.5 * first.stat().st_size  # room for one program, not two
    monkeypatch.setenv("TFN_MD_CACHE_MB", str(cap / 2**20))
    model = make_model(cutoff=5.0, seed=4)
    reference = forces(TFNCalculator(model, compile=False), atoms)
    calc = TFNCalculator(model, compile=True)
    np.testing.assert_allclose(forces(calc, atoms), reference, atol=1e-10)
    assert calc.engine.compiled.n_programs == 1 and not calc.engine.compiled.failed
    (left,) = cache.glob("*.pt2")  # the new program only
    assert left != first and left.stat().st_size <= cap
