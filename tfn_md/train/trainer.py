"""The training loop: weighted losses, AdamW, EMA, schedules, early stopping, atomic
best/last checkpoints, exact resume, metrics CSV and plots; data parallel under torchrun.

Loss of a batch (weights w from the config; N atoms, B structures, masks skip
structures without a label):

    L = w_E mean_b ((E_b - E*_b) / N_b)^2 + w_F mean_i |F_i - F*_i|^2 / 3
      + w_S mean_b |S_b - S*_b|^2 / 9 + sum_k w_k mean |v_k - v*_k|^2 / 3

Determinism: the shuffle of epoch e comes from seed + e, so a run killed and resumed
from its last checkpoint replays the same batches and ends at the same parameters.
Data parallel: each of W processes takes every W-th structure of the global batch,
normalises its loss terms by the global counts and all-reduces the gradients (sum), so
the step equals the single-process step on the global batch. (Plain all-reduce rather
than the DistributedDataParallel wrapper: DDP does not support the double backward
through torch.autograd.grad that force training needs.)
"""

import copy
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import keys
from ..atomic import atomic_path
from ..checkpoint import (
    CheckpointError,
    atomic_torch_save,
    checkpoint_dict,
    model_from_checkpoint,
    read_checkpoint,
    save_potential,
)
from ..data.loader import (
    GraphDataset,
    check_labels,
    collate_batch,
    dataset_statistics,
    shortest_distances,
    species_in,
)
from ..data.reader import H5Dataset
from ..inference.response import compute_response
from ..model import TFN
from .compiled_step import CompiledStep
from .config import TrainConfig
from .losses import Term, loss_from_metrics, needs, residuals, terms

__all__ = ["Trainer", "batch_loss", "evaluate_model"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(x: torch.Tensor) -> torch.Tensor:
    if _world()[1] > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


def label_counts(targets: dict, weights) -> dict[str, int]:
    """How many labelled items each loss term averages over in this batch."""
    return {t.name: int(targets[f"{t.name}_mask"].sum()) for t in terms(weights)
            if f"{t.name}_mask" in targets}


def batch_loss(model, graph, targets, weights, training=True, global_counts=None):
    """(loss, predictions): the terms of :mod:`tfn_md.train.losses`. ``global_counts``
    (see :func:`label_counts`) normalises by the counts over all processes; default:
    this batch's."""
    need = needs(weights, targets)
    out = compute_response(model, graph, forces=need["forces"] or not training,
                           stress=need["stress"], training=training,
                           energy_only=not need["vectors"])
    loss = out[keys.ENERGY].new_zeros(())
    for term in terms(weights):
        if term.name not in targets:
            continue
        r = residuals(term, out, targets, graph)  # [k, components]
        total = r.shape[0] if global_counts is None else global_counts[term.name]
        loss = loss + term.weight * (r**2).sum() / term.components / max(float(total), 1.0)
    if getattr(weights, "energy_nll", 0.0) > 0 and keys.ENERGY in targets:
        from .uncertainty import energy_nll

        loss = loss + weights.energy_nll * energy_nll(model, out, targets, graph)
    return loss, out


# metric name prefixes -> (unit, factor from the labels' unit): the epoch lines
_UNITS = (("energy_per_atom", "meV/atom", 1000.0), ("energy", "meV", 1000.0),
          ("forces", "meV/A", 1000.0), ("stress", "meV/A^3", 1000.0),
          ("charges", "me", 1000.0), (keys.DIPOLE, "me*A", 1000.0),
          ("", "(the label's unit)", 1.0))


def _with_unit(name: str, value: float) -> str:
    """One metric of an epoch line with its unit: "forces_mae 41.1 meV/A"; the loss is a
    weighted sum of terms of different units and says so."""
    if name == "loss":
        return f"loss {value:.4g} (weighted sum)"
    unit, factor = next((u, f) for prefix, u, f in _UNITS if name.startswith(prefix))
    return f"{name} {value * factor:.4g} {unit}"


def evaluate_model(model, loader, device="cpu", vectors=()) -> dict:
    """MAE and RMSE (per component) of every term of :mod:`tfn_md.train.losses` present in
    the data: energy per atom (eV/atom), forces (eV/A), stress (eV/A^3), the vector labels
    ``vectors`` (the dipole of a model with a dipole head, e*A), atomic charges (e) where
    the loader loads them; and energy per structure (eV)."""
    sums: dict[str, list[float]] = {}

    def add(name, diff):
        d = diff.detach().abs().double().flatten()
        s = sums.setdefault(name, [0.0, 0.0, 0])
        s[0] += float(d.sum())
        s[1] += float((d**2).sum())
        s[2] += d.numel()

    table = [Term(keys.ENERGY, 1.0, 1, "energy_per_atom"), Term(keys.FORCES, 1.0, 3, "forces"),
             Term(keys.STRESS, 1.0, 9, "stress"), Term(keys.CHARGES, 1.0, 1, "charges")
             ] + [Term(v, 1.0, 3, v) for v in vectors]
    dtype = model.e0.dtype
    for graph, t in loader:
        graph = graph.to(device, dtype)
        t = t.to(device, dtype)
        stress = keys.STRESS in t and bool(t[f"{keys.STRESS}_mask"].any())
        out = compute_response(model, graph, forces=True, stress=stress,
                               energy_only=not any(v in t for v in (*vectors, keys.CHARGES)))
        for term in table:
            if term.name in t and (term.name != keys.STRESS or stress):
                add(term.metric, residuals(term, out, t, graph))
        if keys.ENERGY in t:
            m = t[f"{keys.ENERGY}_mask"]
            add("energy", (out[keys.ENERGY] - t[keys.ENERGY])[m])
    metrics = {
        f"{name}_{kind}": (s[0] / s[2] if kind == "mae" else math.sqrt(s[1] / s[2]))
        for name, s in sums.items()
        if s[2]
        for kind in ("mae", "rmse")
    }
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"non-finite metrics {bad}: the model's outputs are NaN or infinite on this data"
        )
    return metrics


def _split(cfg: TrainConfig, n: int, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """(train indices, valid indices or None for a separate file); refuses empty parts."""
    if n == 0:
        raise ValueError(f"data.train = {cfg.data.train!r} holds no structures")
    if cfg.data.valid:
        return np.arange(n), None
    perm = rng.permutation(n)
    n_valid = max(1, int(round(cfg.data.valid_fraction * n)))
    if n_valid >= n:
        raise ValueError(
            f"data.valid_fraction = {cfg.data.valid_fraction} of the {n} structures in "
            f"{cfg.data.train} leaves an empty training set; allowed: a fraction that keeps "
            "at least one structure for training, or a validation file in data.valid"
        )
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def check_species(species: list[str], h5: H5Dataset, key: str = "model.species") -> None:
    """Every element of the data must be one of the model's species."""
    missing = [s for s in species_in(h5) if s not in species]
    if missing:
        raise ValueError(
            f"{key} = {list(species)} lacks the elements {missing} found in {h5.path}; "
            f"allowed: a list containing every element of the data ({species_in(h5)})"
        )


def _initial_model(init: str, model_section: dict, species: list[str]) -> TFN:
    """The model of checkpoint ``init`` (a path or shipped name) with its weights, E0 and
    scale, to continue training from; [model] keys may change ``energy_heads`` (new heads
    start at the stored readout, :func:`tfn_md.train.uncertainty.init_heads_from`) and
    ``wall`` only. A calibrated energy uncertainty (``llpr``) is dropped: it belongs to
    the stored weights."""
    from ..checkpoint import resolve_potential
    from .uncertainty import init_heads_from

    ckpt = read_checkpoint(resolve_potential(init))
    stored = json.loads(ckpt["config"])
    free = ("energy_heads", "wall")
    changed = {k: (stored.get(k), v) for k, v in model_section.items()
               if k not in free and stored.get(k) != v}
    if changed:
        raise ValueError(f"run.init = {init!r}: [model] keys differ from its architecture "
                         f"(stored, given): {changed}; only {' and '.join(free)} may change")
    if set(species) - set(stored["species"]):
        raise ValueError(f"run.init = {init!r} knows species {stored['species']}, the data "
                         f"has {species}")
    config = {**stored, **{k: v for k, v in model_section.items() if k in free}, "llpr": False}
    state = {k: v for k, v in ckpt["state_dict"].items()
             if k != "readout_covariance" and (config.get("wall") or k != "wall_radius")}
    model = TFN(**config).to(getattr(torch, ckpt["dtype"]))  # the stored weights exactly
    init_heads_from(model, state, torch.Generator().manual_seed(0))
    return model


class Trainer:
    """Runs one training configuration; see the module docstring."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.out = Path(cfg.run.out)
        self.rank, self.world = _world()
        self.device = torch.device(cfg.run.device)
        self.dtype = getattr(torch, cfg.run.dtype)
        self.progress = progress and self.rank == 0
        h5 = H5Dataset(cfg.data.train)
        rng = np.random.default_rng(cfg.run.seed)
        train_idx, valid_idx = _split(cfg, len(h5), rng)
        self.valid_path = cfg.data.valid or cfg.data.train
        valid_h5 = H5Dataset(self.valid_path)
        if len(valid_h5) == 0:
            raise ValueError(f"data.valid = {cfg.data.valid!r} holds no structures")
        model_kwargs = dict(cfg.model)
        model_kwargs.setdefault("species", species_in(h5))
        # the wall inside the data's shortest distances: on unless asked otherwise
        model_kwargs.setdefault("wall", model_kwargs.get("cutoff", 5.0) is not None)
        for data in (h5, valid_h5):
            check_species(model_kwargs["species"], data)
        cutoff = model_kwargs.setdefault("cutoff", 5.0)
        vkeys = list(cfg.loss.vectors)
        charges = cfg.loss.charges > 0
        self.train_set = GraphDataset(cfg.data.train, cutoff, train_idx, vkeys, charges)
        self.valid_set = GraphDataset(self.valid_path, cutoff, valid_idx, vkeys, charges)
        labels = [t.name for t in terms(cfg.loss)]
        check_labels(h5, train_idx, labels)
        check_labels(valid_h5, self.valid_set.indices, labels)
        last = self.out / "last.pt"
        kept_wall = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.run.seed)
            if resume and last.exists():
                state = read_checkpoint(last)  # format and version checks
                missing = {"ema", "optimizer", "scheduler", "trainer"} - set(state["extra"])
                if missing:
                    raise CheckpointError(f"{last}: not a training checkpoint (no "
                                          f"{sorted(missing)}); --resume needs tfn-md train's "
                                          "last.pt")
                self.model = model_from_checkpoint(state, last)
            elif cfg.run.init:
                state = None
                section = {"wall": model_kwargs["wall"], **cfg.model}
                self.model = _initial_model(cfg.run.init, section, model_kwargs["species"])
                # a warm start keeps the wall of the model it starts from: frames labelled
                # at close contacts (tfn-md learn) would otherwise move it inward
                kept_wall = bool(self.model.config.wall and self.model.wall_radius.any())
            else:
                state = None
                stats = dataset_statistics(h5, train_idx, model_kwargs["species"], cutoff)
                model_kwargs.setdefault("avg_num_neighbors", stats["avg_num_neighbors"])
                self.model = TFN(**model_kwargs)
                self.model.e0.copy_(torch.tensor(stats["e0"]))
                self.model.scale.fill_(stats["scale"])
            if state is None and self.model.config.wall and not kept_wall:
                # at the training data's shortest distances: zero on every training structure
                self.model.set_wall_radius(torch.as_tensor(shortest_distances(
                    h5, train_idx, self.model.species, cutoff)))
        self.model = self.model.to(self.device, self.dtype)
        self.ema = copy.deepcopy(self.model)
        self.step = CompiledStep(
            self.model, cfg.loss,
            lambda graph, t, counts: batch_loss(self.model, graph, t, cfg.loss, True, counts)[0],
        ) if cfg.run.compile else None
        o = cfg.optim
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        if o.schedule == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, o.epochs, o.min_lr)
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=o.factor, patience=o.patience, min_lr=o.min_lr
            )
        for p in self.model.parameters():  # every process has gradients to all-reduce
            p.grad = torch.zeros_like(p)
        self.epoch, self.best, self.since_best, self.history = 0, math.inf, 0, []
        if state is not None:
            self.ema.load_state_dict(state["extra"]["ema"])
            self.opt.load_state_dict(state["extra"]["optimizer"])
            self.sched.load_state_dict(state["extra"]["scheduler"])
            t = json.loads(state["extra"]["trainer"])
            self.epoch, self.best, self.since_best, self.history = (
                t["epoch"], t["best"], t["since_best"], t["history"])

    # -- one epoch -------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Global batches (dataset positions) of an epoch: a permutation seeded by seed + epoch."""
        order = np.random.default_rng(self.cfg.run.seed * 100003 + epoch).permutation(
            len(self.train_set))
        bs = self.cfg.data.batch_size
        return [order[k : k + bs] for k in range(0, len(order), bs)]

    def backward(self, global_batch: np.ndarray) -> float:
        """Gradients of the global batch's loss in ``.grad`` (this process computes its share
        ``global_batch[rank::world]``; gradients are summed over processes). -> local loss."""
        mine = global_batch[self.rank :: self.world]
        self.opt.zero_grad(set_to_none=False)
        loss_value = 0.0
        if len(mine):
            graph, t = collate_batch([self.train_set[int(i)] for i in mine])
            graph = graph.to(self.device, self.dtype)
            t = t.to(self.device, self.dtype)
            counts = label_counts(t, self.cfg.loss)
        else:
            counts = {}
        if self.world > 1:
            names = [term.name for term in terms(self.cfg.loss)]
            vec = _all_sum(torch.tensor([counts.get(n, 0) for n in names], dtype=torch.float64))
            counts = dict(zip(names, vec.tolist()))
        if len(mine) and self.step is not None:  # run.compile
            loss_value = self.step.accumulate(graph, t, counts)
        elif len(mine):
            loss, _ = batch_loss(self.model, graph, t, self.cfg.loss, True, counts)
            loss.backward()
            loss_value = float(loss.detach())
        if self.world > 1:
            for p in self.model.parameters():
                dist.all_reduce(p.grad)
        return loss_value

    def train_epoch(self) -> float:
        from tqdm import tqdm

        self.model.train()
        total, batches = 0.0, self._epoch_batches(self.epoch)
        for glob in tqdm(batches, disable=not self.progress, desc=f"epoch {self.epoch + 1}",
                         leave=False, mininterval=1.0):
            loss = self.backward(glob)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                  self.cfg.optim.grad_clip)
            if not (math.isfinite(loss) and torch.isfinite(norm)):  # same on every process
                raise FloatingPointError(
                    f"training stopped: the loss became {loss} (gradient norm {float(norm)}) "
                    f"in epoch {self.epoch + 1}; the weights were not updated and "
                    f"{self.out / 'last.pt'} keeps the last finite state. Try a smaller "
                    f"optim.lr (now {self.opt.param_groups[0]['lr']:g}) or check the labels"
                )
            total += loss
            self.opt.step()
            with torch.no_grad():
                d = self.cfg.optim.ema_decay
                for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                    pe.mul_(d).add_(p, alpha=1 - d)
        return total / max(len(batches), 1)

    def validate(self) -> dict:
        loader = torch.utils.data.DataLoader(self.valid_set, batch_size=self.cfg.data.batch_size,
                                             collate_fn=collate_batch)
        metrics = evaluate_model(self.ema, loader, self.device, vectors=self.cfg.loss.vectors)
        metrics["loss"] = loss_from_metrics(metrics, self.cfg.loss)
        return metrics

    # -- the run ---------------------------------------------------------------------
    def save(self, path: Path, model) -> None:
        extra = {
            "train_config": json.dumps(self.cfg.to_dict()),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "trainer": json.dumps({"epoch": self.epoch, "best": self.best,
                                   "since_best": self.since_best, "history": self.history}),
        }
        atomic_torch_save(checkpoint_dict(model, extra), path)

    def fit(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        while self.epoch < cfg.optim.epochs and self.since_best < cfg.optim.early_stop:
            start = time.perf_counter()
            train_loss = self.train_epoch()
            metrics = self.validate()
            if cfg.optim.schedule == "cosine":
                self.sched.step()
            else:
                self.sched.step(metrics["loss"])
            self.epoch += 1
            row = {"epoch": self.epoch, "lr": self.opt.param_groups[0]["lr"],
                   "train_loss": train_loss, **{f"valid_{k}": v for k, v in metrics.items()},
                   "seconds": time.perf_counter() - start}
            self.history.append(row)
            improved = metrics["loss"] < self.best
            self.best = min(self.best, metrics["loss"])
            self.since_best = 0 if improved else self.since_best + 1
            if self.rank == 0:
                if improved:
                    save_potential(self.ema, self.out / "best.pt",
                                   extra={"train_config": json.dumps(cfg.to_dict()),
                                          "epoch": self.epoch})
                self.save(self.out / "last.pt", self.model)
                self._write_csv()
                if self.progress:
                    print(f"epoch {self.epoch}: train loss {train_loss:.4g} (weighted sum), "
                          "valid " + ", ".join(_with_unit(k, v) for k, v in metrics.items()),
                          flush=True)
        if self.rank == 0 and cfg.run.plots:
            self.plot()
        return self.history[-1] if self.history else {}

    def _write_csv(self) -> None:
        with atomic_path(self.out / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
            cols = list(dict.fromkeys(k for row in self.history for k in row))
            writer = csv.DictWriter(fh, fieldnames=cols)
            writer.writeheader()
            writer.writerows(self.history)

    def plot(self) -> None:
        try:
            import matplotlib
        except ImportError:
            return
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
        ep = [r["epoch"] for r in self.history]
        ax.semilogy(ep, [r["train_loss"] for r in self.history], label="train loss")
        ax.semilogy(ep, [r["valid_loss"] for r in self.history], label="valid loss")
        ax.set_xlabel("epoch")
        ax.legend()
        fig.tight_layout()
        with atomic_path(self.out / "learning_curve.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        # parity plots on the validation set with the EMA weights
        e_true, e_pred, f_true, f_pred = [], [], [], []
        loader = torch.utils.data.DataLoader(self.valid_set, batch_size=self.cfg.data.batch_size,
                                             collate_fn=collate_batch)
        for graph, t in loader:
            graph = graph.to(self.device, self.dtype)
            out = compute_response(self.ema, graph, forces=True)
            n = torch.bincount(graph.batch, minlength=graph.n_graphs).double()
            if keys.ENERGY in t:
                e_true.append((t[keys.ENERGY] / n).numpy())
                e_pred.append((out[keys.ENERGY].detach().double().cpu() / n).numpy())
            if keys.FORCES in t:
                f_true.append(t[keys.FORCES].numpy().ravel())
                f_pred.append(out[keys.FORCES].detach().double().cpu().numpy().ravel())
        fig, axes = plt.subplots(1, 2, figsize=(9, 4), dpi=120)
        for ax, tr, pr, label in [(axes[0], e_true, e_pred, "energy (eV/atom)"),
                                  (axes[1], f_true, f_pred, "force components (eV/A)")]:
            if tr:
                tr, pr = np.concatenate(tr), np.concatenate(pr)
                ax.plot(tr, pr, ".", ms=2)
                lim = [min(tr.min(), pr.min()), max(tr.max(), pr.max())]
                ax.plot(lim, lim, "k--", lw=0.8)
            ax.set_xlabel(f"reference {label}")
            ax.set_ylabel(f"TFN {label}")
        fig.tight_layout()
        with atomic_path(self.out / "parity.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
