"""AOTInductor programs: trace, compile (in a child process), cache, load, check against eager.

One place for the native code tfn_md runs: the calculator's whole-response programs
(:mod:`tfn_md.inference.compiled`) and LAMMPS' local-energy programs
(:mod:`tfn_md.lammps.local_program`) both come from :func:`build`.

Serial code. Programs are generated with Inductor's ``cpp.threads = 1`` (``CODEGEN``),
whatever torch's thread count. Root cause of the heap corruption this prevents (torch 2.13
and earlier, pytorch/pytorch#191837; pull request 191861 upstream fixes it): for an
``index_put(accumulate=True)`` (a scatter-add: our force and message sums) whose source is
transposed, Inductor's CPU backend writes a 2-D tiled kernel; generated for more than one
thread, it stores through ``atomic_add_vec``, and ``CppTile2DKernel.store`` applies the
tile's inner-index offset twice (``x0 + 2*x0_inner`` where ``x0 + x0_inner`` is meant).
The scatter then adds into wrong elements and past the end of its buffer: wrong forces
and ``double free or corruption``. Generated for one thread the same kernel uses a plain
accumulating store and is exact; ``tests/inference/test_compiled_safety.py`` keeps a ten-line
reproduction and reports whether the installed torch still needs this. Serial
code is also the faster choice here (2 cores, 32 channels, float32; per call, torch at 2
threads): ethanol 0.33 ms serial against 0.52 ms parallel (with the bug patched), Cu 864
E+F+S 67 ms against 127 ms: atomic adds under contention and an OpenMP fork/join per
microsecond kernel cost more than the second core gives. Matrix products stay BLAS calls,
which use torch's intra-op threads, except in small programs: there the small ones are
traced as loops (see ``SMALL_PRODUCTS``) and the others run on the calling thread
(:mod:`tfn_md.inference.serial_blas`).

Safe by construction:

- The cache key (:func:`fingerprint`) holds what the generated code depends on beyond the
  caller's key: Inductor options (``CODEGEN`` and any ``TORCHINDUCTOR_*`` environment
  variables), the vector ISA Inductor picks, the CPU, the C++ compiler and its version,
  the torch build. Generated code no longer depends on torch's thread count.
- A new program is compiled in a child process (about 3 s more than the 20-40 s of the
  compile itself), which also loads it and checks it against the exported graph run
  eagerly: a program that crashes takes down the child only, and is never cached.
- Cache files are ``<key>.<digest>.pt2`` with ``digest = sha256(key + content)``, written
  atomically: a truncated, damaged or renamed file fails the digest and is recompiled,
  not loaded. A ``.pt2`` is native code: the cache folder is created with mode 0700, and
  a folder that another user owns or that others can write to is refused (one warning:
  the eager path).
- Every program, new or loaded, is checked once against the eager function on the inputs
  of its first call (``TOLERANCE``); a mismatch gives one warning, the program is dropped
  (the caller runs that shape eagerly) and a ``<key>.rejected`` note keeps later
  processes from compiling it again.
"""

import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..nn.edge_kernel import unchunked
from ..version import __version__
from .program_check import TOLERANCE, compare
from .serial_blas import serially

__all__ = ["CACHE_MB", "CODEGEN", "FORMAT", "TOLERANCE", "Program", "ProgramError", "build",
           "cache_dir", "cache_limit", "digest_of_sources", "fingerprint", "program_key",
           "source_digest", "trim_cache"]


# Inductor options of every program (see the module docstring); dynamic_threads would
# bring the parallel atomic-add path back even for one thread
CODEGEN = {"cpp.threads": 1, "cpp.dynamic_threads": False}
WORKER = Path(__file__).with_name("program_check.py")
SMALL_PRODUCT = 1 << 16  # multiply-adds: smaller matrix products are traced as loops ...
SMALL_PROGRAM = 4096  # ... in programs of at most this many edges (molecules)
CACHE_MB = 2048  # default size cap of the program cache, MiB ($TFN_MD_CACHE_MB)


def _small(a, b) -> bool:
    """Whether the (batched) matrix product a @ b has at most ``SMALL_PRODUCT``
    multiply-adds."""
    return a.numel() * b.shape[-1] <= SMALL_PRODUCT


def _mm(a, b):
    if not _small(a, b):
        return NotImplemented  # traced as it is: an extern (BLAS) call
    return (a.unsqueeze(2) * b.unsqueeze(0)).sum(1)


def _bmm(a, b):
    if not _small(a, b):
        return NotImplemented
    return (a.unsqueeze(3) * b.unsqueeze(1)).sum(2)


def _addmm(bias, a, b, beta=1, alpha=1):
    product = _mm(a, b)
    if product is NotImplemented:
        return NotImplemented
    return beta * bias + alpha * product


# In small programs, small matrix products become loops that Inductor fuses into its
# serial kernels instead of BLAS calls, which fork torch's OpenMP threads even for a
# 96x9x9 product (100 us each where the threads must wake up). ethanol-gfn2's program,
# per call at 1 / 2 threads: 266 / 305 us with every product a BLAS call, 271 / 269 us
# with products up to 2^16 multiply-adds as loops, 670 / 710 us with products up to 2^18
# as loops (larger products are faster in BLAS). In large programs the same loops cost
# more than the fork/join they save: Cu 864 (37k edges, E+F+S, 1 / 2 threads) 50 / 47 ms
# with BLAS calls, 105 / 100 ms with products up to 2^16 as loops.
SMALL_PRODUCTS = {torch.ops.aten.mm.default: _mm, torch.ops.aten.bmm.default: _bmm,
                  torch.ops.aten.addmm.default: _addmm}


FORMAT = 2  # of the cached programs: bump when the traced computation changes


def digest_of_sources(root: Path) -> bytes:
    """Hash of every module of the package at ``root`` (paths relative to it, and contents).
    All modules, not a list of the traced ones: the traced code lives in the core, in
    inference/ and in lammps/ (a rank's program), and a list would miss the next module a
    traced function calls into."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.digest()


@functools.cache
def source_digest() -> bytes:
    """:func:`digest_of_sources` of this package, once per process: a program key includes
    it, so a checkout with any edit never loads a program traced from older code."""
    return digest_of_sources(Path(__file__).resolve().parents[1])


def program_key(model, isolated: Tensor, inputs: tuple, what: tuple) -> str:
    """Hash of everything a program depends on: weights, tables, isolated features,
    configuration, input shapes, ``what`` it computes, dtype, device, torch version and
    the source of the model's code (so an edited checkout never loads a program of older
    code)."""
    digest = hashlib.sha256()
    digest.update(source_digest())
    meta = (model.config_dict(), [tuple(t.shape) for t in inputs], str(isolated.dtype),
            str(isolated.device), what, torch.__version__, __version__, FORMAT)
    digest.update(repr(meta).encode())
    tensors = [*model.state_dict().values(), isolated]
    tensors += [conv.table[0] for conv in model.convolutions if conv.table is not None]
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


class ProgramError(RuntimeError):
    """No program for this key: compiling failed, the cache is unsafe, or it was rejected."""


def cache_dir() -> Path:
    """Where compiled programs are kept between processes: ``$TFN_MD_CACHE``, else
    ``$XDG_CACHE_HOME/tfn_md/compiled``, else ``~/.cache/tfn_md/compiled``."""
    if os.environ.get("TFN_MD_CACHE"):
        return Path(os.environ["TFN_MD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tfn_md" / "compiled"


def cache_limit() -> int:
    """The size cap of the program cache in bytes: ``$TFN_MD_CACHE_MB`` MiB, else
    ``CACHE_MB`` (2 GiB: 40-80 programs of 25-50 MB)."""
    raw = os.environ.get("TFN_MD_CACHE_MB", "")
    try:
        mb = float(raw) if raw else CACHE_MB
    except ValueError:
        mb = math.nan
    if not (mb > 0 and math.isfinite(mb)):  # a warning, not a failure in the middle of MD
        warnings.warn(f"TFN_MD_CACHE_MB={raw!r} is not a size in MiB > 0 (e.g. 2048): the "
                      f"program cache keeps the default cap, {CACHE_MB} MiB", RuntimeWarning,
                      stacklevel=2)
        mb = CACHE_MB
    return int(mb * 2**20)


def trim_cache(folder: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove the least recently used programs of ``folder`` (oldest modification time:
    a program is touched whenever it is loaded) until the ``*.pt2`` files together take
    at most ``limit`` bytes (:func:`cache_limit`); ``keep`` (the program just built) is
    never removed. Returns the removed files."""
    limit = cache_limit() if limit is None else limit
    files = []
    for path in folder.glob("*.pt2"):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = []
    for _, size, path in sorted(files):
        if total <= limit:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def safe_cache_dir() -> Path:
    """:func:`cache_dir`, created with mode 0700; ProgramError if another user owns it or
    others can write to it (they could plant native code that this process would run)."""
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.stat()
    except OSError as err:
        raise ProgramError(f"cannot use the program cache {path}: {err}") from err
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise ProgramError(f"the program cache {path} belongs to another user (uid "
                           f"{st.st_uid}); set TFN_MD_CACHE to a folder of your own")
    if st.st_mode & 0o022:
        raise ProgramError(f"the program cache {path} can be written by other users (mode "
                           f"{st.st_mode & 0o777:o}); run 'chmod 700 {path}' or set "
                           "TFN_MD_CACHE to a private folder")
    return path


@functools.cache
def _compiler_version() -> str:
    from torch._inductor.cpp_builder import get_cpp_compiler

    compiler = get_cpp_compiler()
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"{compiler}: {out.splitlines()[0] if out else 'unknown'}"


def _cpu() -> str:
    """Model name and feature flags of this CPU (the code is built for the machine)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "|".join(sorted({ln.split(":", 1)[1].strip() for ln in lines
                            if ln.split(":", 1)[0].strip() in wanted}))


def fingerprint(device: torch.device) -> str:
    """What generated code depends on besides the traced graph: Inductor options, vector
    ISA, CPU, C++ compiler and version, torch build, and the GPU for CUDA programs."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    inductor_env = sorted((k, v) for k, v in os.environ.items()  # the child's options
                          if k.startswith("TORCHINDUCTOR_") and not k.endswith("CACHE_DIR"))
    parts = [json.dumps(CODEGEN, sort_keys=True), repr(inductor_env),
             f"small products {SMALL_PRODUCT}", str(pick_vec_isa()), _cpu(),
             _compiler_version(), torch.__version__, str(torch.version.git_version),
             str(torch.version.debug), platform.machine()]
    if device.type == "cuda":
        parts += [torch.cuda.get_device_name(device),
                  str(torch.cuda.get_device_capability(device)), str(torch.version.cuda)]
    return "\n".join(parts)


def _digest(key: str, content: bytes) -> str:
    return hashlib.sha256(key.encode() + content).hexdigest()[:32]


class Program:
    """A loaded AOTInductor program, checked once against ``eager`` (the function it was
    traced from) on the inputs of its first call. A call returns the outputs, or None
    where that check failed (one warning; the program is dropped for good)."""

    def __init__(self, runner, path: Path, eager, dtype: torch.dtype, serial: bool = False):
        self.runner, self.path, self.eager, self.dtype = runner, path, eager, dtype
        self.checked, self.serial = False, serial  # serial: BLAS calls on one thread
        # the loader's flat call skips the wrapper's pytree (un)flattening: 15 us a call
        boxed = getattr(getattr(runner, "loader", None), "boxed_run", None)
        self._run = runner if boxed is None else (lambda *inputs: boxed(list(inputs)))

    def __call__(self, *inputs):
        if self.runner is None:
            return None
        out = serially(self._run, *inputs) if self.serial else self._run(*inputs)
        if not self.checked:
            with torch.enable_grad():
                reference = self.eager(*inputs)
            problem = compare(out, reference, TOLERANCE[self.dtype])
            if problem is not None:
                _reject(self.path, problem)
                self.runner = None
                return None
            self.checked = True
        return out


def _reject(path: Path, reason: str) -> None:
    warnings.warn(f"the compiled TFN program {path.name} disagrees with the eager path "
                  f"({reason}); it is dropped and this shape runs eagerly", RuntimeWarning,
                  stacklevel=4)
    try:
        path.unlink(missing_ok=True)
        _note_rejected(path.parent, path.name.split(".")[0], reason)
    except OSError:
        pass


def _note_rejected(folder: Path, key: str, reason: str) -> None:
    """``<key>.rejected``: later processes do not compile this program again."""
    _write_atomic(folder / f"{key}.rejected", reason.encode())


def _write_atomic(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _cached(folder: Path, key: str) -> Path | None:
    """The verified program file of ``key``; damaged or foreign files are removed."""
    found = None
    for path in folder.glob(f"{key}.*.pt2"):
        st = path.lstat()
        ours = (not hasattr(os, "geteuid") or st.st_uid == os.geteuid()) and \
            not st.st_mode & 0o022 and path.is_file() and not path.is_symlink()
        if ours and path.name.split(".")[1] == _digest(key, path.read_bytes()):
            found = path
            continue
        warnings.warn(f"damaged or foreign program {path.name} in {folder}: removed, "
                      "compiling again", RuntimeWarning, stacklevel=3)
        path.unlink(missing_ok=True)
    return found


def build(function, inputs: tuple, key: str, small: bool = False) -> Program:
    """``function(*inputs)`` (tensors in, a tuple of tensors out) as a checked AOTInductor
    :class:`Program` for these shapes: from the disk cache, or traced here (``make_fx``,
    autograd included, chunking off; common terms removed: the backward recomputes forward
    ones), exported, and compiled and checked in a child process, then cached; its first
    call is checked against ``function`` run eagerly. ``small``: a program
    of at most ``SMALL_PROGRAM`` edges, whose small matrix products are traced as loops and
    whose other ones run on the calling thread alone (:mod:`tfn_md.inference.serial_blas`).
    ProgramError where no program can be had."""
    device, dtype = inputs[0].device, next(t.dtype for t in inputs if t.is_floating_point())
    folder = safe_cache_dir()
    key = hashlib.sha256(f"{key}\n{fingerprint(device)}\n{small}".encode()).hexdigest()[:32]
    rejected = folder / f"{key}.rejected"
    if rejected.is_file():
        raise ProgramError(f"this program was rejected earlier ({rejected.read_text()}; "
                           f"delete {rejected} to try again)")
    path = _cached(folder, key)
    if path is None:
        from torch.fx.experimental.proxy_tensor import make_fx
        from torch.fx.passes.dialect.common.cse_pass import CSEPass

        with unchunked(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations
            traced = make_fx(function, decomposition_table=SMALL_PRODUCTS if small else {})(
                *inputs)
            traced = CSEPass()(traced).graph_module
            exported = torch.export.export(traced, inputs)
        path = _compile_in_child(exported, inputs, folder, key, dtype)
        trim_cache(folder, keep=path)
    else:
        try:
            os.utime(path)  # recently used: the last to go when the cache is trimmed
        except OSError:
            pass
    try:
        runner = torch._inductor.aoti_load_package(str(path))
    except Exception as err:
        raise ProgramError(f"loading {path} failed ({type(err).__name__}: {err})") from err
    return Program(runner, path, function, dtype, serial=small and device.type == "cpu")


def _python() -> str:
    """This environment's Python interpreter (inside LAMMPS, ``sys.executable`` is ``lmp``)."""
    if Path(sys.executable).name.startswith("python"):
        return sys.executable
    for name in ("python3", "python"):
        candidate = Path(sys.prefix) / "bin" / name
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def _compile_in_child(exported, inputs: tuple, folder: Path, key: str,
                      dtype: torch.dtype) -> Path:
    """Compile ``exported`` in a child process (:mod:`tfn_md.inference.program_check`), which also
    runs the program against the exported graph; cache it under its digest."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as work:
        work = Path(work)
        torch.export.save(exported, work / "exported.pt2")
        torch.save([t.cpu() for t in inputs], work / "inputs.pt")
        (work / "job.json").write_text(json.dumps({
            "inductor": CODEGEN, "tolerance": TOLERANCE[dtype],
            "device": str(inputs[0].device)}))
        run = subprocess.run([_python(), str(WORKER), str(work)], capture_output=True,
                             text=True, check=False)
        if run.returncode != 0:
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            how = (f"signal {-run.returncode}" if run.returncode < 0
                   else f"exit status {run.returncode}")
            if run.returncode == 3:  # compiled, ran, and disagreed with the exported graph
                _note_rejected(folder, key, " ".join(tail))
            raise ProgramError(f"compiling the program failed in a child process ({how}): "
                               + " | ".join(tail))
        content = (work / "program.pt2").read_bytes()
        path = folder / f"{key}.{_digest(key, content)}.pt2"
        os.chmod(work / "program.pt2", 0o600)
        os.replace(work / "program.pt2", path)  # atomic: others see all of it or nothing
    return path
