"""What the paper's tasks share: point clouds as graphs, seeded training, reports, checkpoints.

A task is its data, its readout and loss, and its report; the network is always
:class:`tfn_md.TFN` (the paper's all-pairs graph, self-pair included, Gaussian basis).
Task checkpoints are ordinary tfn_md checkpoints whose ``extra`` holds the task name,
the task head's weights and the report numbers.
"""

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import Tensor, nn

from ..atomic import atomic_path, write_text_atomic
from ..checkpoint import atomic_torch_save, checkpoint_dict, load_potential, read_checkpoint
from ..graph import Graph, atoms_to_graph, collate
from ..model import TFN

__all__ = [
    "batch_graph",
    "load_or_make_data",
    "load_task",
    "points_graph",
    "save_task",
    "seeded",
    "train_loop",
    "write_report",
]

DUMMY = "H"  # the element every point of a paper task carries (one species)


def points_graph(atoms: Atoms, scalar_key: str | None, dtype=torch.float64) -> Graph:
    """All-pairs graph of a point cloud; ``atoms.arrays[scalar_key]`` become node scalars."""
    graph = atoms_to_graph(atoms, cutoff=None, dtype=dtype)
    if scalar_key is not None:
        values = np.asarray(atoms.arrays[scalar_key], dtype=float).reshape(len(atoms), -1)
        graph.node_scalars = torch.as_tensor(values, dtype=dtype)
    return graph


def batch_graph(structures: list[Atoms], scalar_key: str | None, dtype=torch.float64) -> Graph:
    return collate([points_graph(a, scalar_key, dtype) for a in structures])


@contextmanager
def seeded(seed: int):
    """Run a block with torch's RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def train_loop(
    params,
    step_loss,
    n_steps: int,
    lr: float = 1e-3,
    desc: str = "train",
    log_every: int = 50,
    schedule: bool = True,
) -> list[tuple[int, float]]:
    """Adam on ``step_loss(step) -> loss``; cosine decay of the learning rate. -> [(step, loss)]."""
    from tqdm import tqdm

    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_steps) if schedule else None
    history = []
    bar = tqdm(range(n_steps), desc=desc, mininterval=1.0)
    for step in bar:
        opt.zero_grad()
        loss = step_loss(step)
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        if step % log_every == 0 or step == n_steps - 1:
            history.append((step, loss.item()))
            bar.set_postfix(loss=f"{loss.item():.3g}")
    return history


def predict_points(model: TFN, structures: list[Atoms], output: str, batch=100) -> np.ndarray:
    """Per-point model output ``output`` (e.g. vectors, tensors) of point clouds with masses."""
    out = []
    with torch.no_grad():
        for k in range(0, len(structures), batch):
            g = batch_graph(structures[k : k + batch], "point_mass", model.e0.dtype)
            out.append(model(g)[output].numpy())
    return np.concatenate(out)


def fit_relative(
    model: TFN,
    train: list[Atoms],
    target: str,
    output: str,
    steps: int,
    desc: str,
    lr=3e-3,
    batch=50,
) -> list:
    """Train per-point outputs on ``atoms.arrays[target]`` with the mean relative squared
    error |y - y*|^2 / |y*|^2 per point (the tasks' metrics are relative)."""
    chunks = [train[k : k + batch] for k in range(0, len(train), batch)]
    graphs = [batch_graph(c, "point_mass", torch.float64) for c in chunks]
    targets = [torch.as_tensor(np.concatenate([a.arrays[target] for a in c])) for c in chunks]

    def loss(step):
        k = step % len(graphs)
        pred = model(graphs[k])[output].flatten(1)
        t = targets[k].reshape(pred.shape)
        return (((pred - t) ** 2).sum(1) / (t**2).sum(1)).mean()

    return train_loop(model.parameters(), loss, steps, lr=lr, desc=desc)


def mass_pair_probes(r) -> list[Atoms]:
    """For each distance d in ``r``: unit masses at the origin and at (0, 0, d), then the same
    with mass 0 at (0, 0, d); outputs of the two differ by the pair term alone."""
    probes = []
    for d in r:
        for m in (1.0, 0.0):
            a = Atoms(DUMMY * 2, positions=[[0, 0, 0], [0, 0, d]])
            a.arrays["point_mass"] = np.array([1.0, m])
            probes.append(a)
    return probes


def run_point_task(
    task: str,
    out: Path,
    splits: dict,
    evaluate,
    seed: int,
    model_kwargs: dict,
    target: str,
    output: str,
    steps: int,
    score,
) -> tuple[TFN, dict]:
    """Train (seeded) or load a per-point task model, score it on ``splits['test']`` (also
    untrained), save the checkpoint when trained. -> (model, report)."""
    timer = Timer()
    history, untrained = [], None
    if evaluate is None:
        with seeded(seed):
            model = TFN(species=[DUMMY], **model_kwargs).double()
        untrained = score(model, splits["test"])
        history = fit_relative(model, splits["train"], target, output, steps, task)
    else:
        model, _, _ = load_task(evaluate, task)
    report = score(model, splits["test"])
    report.update(
        untrained=untrained,
        history=history,
        train_seconds=timer.seconds if evaluate is None else None,
    )
    if evaluate is None:
        save_task(out / f"{task}.pt", task, model, None, report)
    return model, report


def loss_plot(history):
    """A ``write_report`` plot of the training loss (empty when nothing was trained)."""
    if not history:
        return {}
    return {
        "loss.png": lambda ax: (
            ax.semilogy(*zip(*history)),
            ax.set_xlabel("step"),
            ax.set_ylabel("loss"),
        )
    }


def write_report(out: Path, task: str, report: dict, table_md: str, plots: dict) -> None:
    """report.json, report.md (table beside the paper's numbers) and PNG plots in ``out``.

    ``plots`` maps file names to functions ``f(ax)`` drawing on a matplotlib axis."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, default=float) + "\n")
    write_text_atomic(out / "report.md", f"# Paper task: {task}\n\n{table_md}\n")
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for name, draw in plots.items():
            fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
            draw(ax)
            fig.tight_layout()
            with atomic_path(out / name) as tmp:
                fig.savefig(tmp, format=Path(name).suffix.lstrip(".") or "png")
            plt.close(fig)


def save_task(path: Path, task: str, model: TFN, head: nn.Module | None, report: dict) -> None:
    extra = {
        "task": task,
        "head": {} if head is None else {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "report": json.dumps(report, default=float),
    }
    atomic_torch_save(checkpoint_dict(model, extra), path)


def load_task(path, task: str) -> tuple[TFN, dict[str, Tensor], dict]:
    """(model, head state dict, report saved with it); raises if it is another task's file."""
    ckpt = read_checkpoint(path)
    found = ckpt.get("extra", {}).get("task")
    if found != task:
        raise ValueError(f"{path} is a checkpoint for task {found!r}, not {task!r}")
    return load_potential(path), ckpt["extra"]["head"], json.loads(ckpt["extra"]["report"])


def load_or_make_data(path: Path | None, out: Path, name: str, make) -> dict[str, list[Atoms]]:
    """Read the task's splits from an HDF5 file (``info['split']``), or generate them with
    ``make() -> {split: [Atoms]}`` and write ``out/<name>.h5``."""
    from ..data import H5Dataset, write_atoms

    if path is None:
        splits = make()
        path = out / f"{name}.h5"
        out.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        tagged = []
        for split, items in splits.items():
            for a in items:
                a.info["split"] = split
                tagged.append(a)
        write_atoms(path, tagged, append=False)
    dataset = H5Dataset(path)
    splits: dict[str, list[Atoms]] = {}
    for i in range(len(dataset)):
        a = dataset[i]
        splits.setdefault(str(a.info["split"]), []).append(a)
    return splits


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
