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
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import keys
from ..data.reader import H5Dataset
from ..data.loader import GraphDataset, collate_batch, dataset_statistics, species_in
from ..io import atomic_torch_save, checkpoint_dict, save_potential
from ..model import TFN
from ..response import compute_response
from .config import TrainConfig

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
    names = ["energy", "forces", "stress"] + list(weights.vectors)
    return {n: int(targets[f"{n}_mask"].sum()) for n in names if f"{n}_mask" in targets}


def batch_loss(model, graph, targets, weights, training=True, global_counts=None):
    """(loss, predictions). ``global_counts`` (see :func:`label_counts`) normalises by the
    counts over all processes; default: this batch's."""
    need_f = weights.forces > 0 and keys.FORCES in targets
    need_s = weights.stress > 0 and keys.STRESS in targets
    need_v = any(w > 0 and name in targets for name, w in weights.vectors.items())
    out = compute_response(model, graph, forces=need_f or not training, stress=need_s,
                           training=training, energy_only=not need_v)
    n_atoms = torch.bincount(graph.batch, minlength=graph.n_graphs).to(graph.positions.dtype)
    terms = {}
    if weights.energy > 0 and keys.ENERGY in targets:
        m = targets[f"{keys.ENERGY}_mask"]
        err = ((out[keys.ENERGY] - targets[keys.ENERGY]) / n_atoms)[m]
        terms["energy"] = (weights.energy, (err**2).sum(), int(m.sum()))
    if need_f:
        m = targets[f"{keys.FORCES}_mask"]
        err = (out[keys.FORCES] - targets[keys.FORCES])[m]
        terms["forces"] = (weights.forces, (err**2).sum() / 3, int(m.sum()))
    if need_s:
        m = targets[f"{keys.STRESS}_mask"]
        err = (out[keys.STRESS] - targets[keys.STRESS])[m]
        terms["stress"] = (weights.stress, (err**2).sum() / 9, int(m.sum()))
    for name, w in weights.vectors.items():
        if w > 0 and name in targets:
            m = targets[f"{name}_mask"]
            pred = out[keys.VECTORS]
            if targets[name].shape[0] == graph.n_graphs:  # per structure: sum of atoms
                pred = pred.new_zeros(graph.n_graphs, 3).index_add_(0, graph.batch, pred)
            terms[name] = (w, ((pred - targets[name])[m] ** 2).sum() / 3, int(m.sum()))
    loss = out[keys.ENERGY].new_zeros(())
    for name, (w, sq, count) in terms.items():
        total = count if global_counts is None else global_counts[name]
        loss = loss + w * sq / max(float(total), 1.0)
    return loss, out


def evaluate_model(model, loader, device="cpu") -> dict:
    """MAE and RMSE of energy per atom (eV/atom), energy per structure (eV), forces (eV/A),
    stress (eV/A^3) and vectors over a loader."""
    sums: dict[str, list[float]] = {}

    def add(name, diff):
        d = diff.detach().abs().double().flatten()
        s = sums.setdefault(name, [0.0, 0.0, 0])
        s[0] += float(d.sum())
        s[1] += float((d**2).sum())
        s[2] += d.numel()

    dtype = model.e0.dtype
    for graph, t in loader:
        graph = graph.to(device, dtype)
        t = {k: v.to(device) for k, v in t.items()}
        stress = keys.STRESS in t and bool(t[f"{keys.STRESS}_mask"].any())
        out = compute_response(model, graph, forces=True, stress=stress)
        n = torch.bincount(graph.batch, minlength=graph.n_graphs)
        if keys.ENERGY in t:
            m = t[f"{keys.ENERGY}_mask"]
            diff = (out[keys.ENERGY] - t[keys.ENERGY].to(dtype))[m]
            add("energy_per_atom", diff / n[m])
            add("energy", diff)
        if keys.FORCES in t:
            m = t[f"{keys.FORCES}_mask"]
            add("forces", (out[keys.FORCES] - t[keys.FORCES].to(dtype))[m])
        if stress:
            m = t[f"{keys.STRESS}_mask"]
            add("stress", (out[keys.STRESS] - t[keys.STRESS].to(dtype))[m])
    return {
        f"{name}_{kind}": (s[0] / s[2] if kind == "mae" else math.sqrt(s[1] / s[2]))
        for name, s in sums.items()
        for kind in ("mae", "rmse")
    }


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
        if cfg.data.valid:
            train_idx, self.valid_path, valid_idx = np.arange(len(h5)), cfg.data.valid, None
        else:
            perm = rng.permutation(len(h5))
            n_valid = max(1, int(round(cfg.data.valid_fraction * len(h5))))
            train_idx, valid_idx = np.sort(perm[n_valid:]), np.sort(perm[:n_valid])
            self.valid_path = cfg.data.train
        model_kwargs = dict(cfg.model)
        model_kwargs.setdefault("species", species_in(h5))
        cutoff = model_kwargs.setdefault("cutoff", 5.0)
        vkeys = list(cfg.loss.vectors)
        self.train_set = GraphDataset(cfg.data.train, cutoff, train_idx, vkeys)
        self.valid_set = GraphDataset(self.valid_path, cutoff, valid_idx, vkeys)
        last = self.out / "last.pt"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.run.seed)
            if resume and last.exists():
                state = torch.load(last, weights_only=True, map_location="cpu")
                model_kwargs = json.loads(state["config"])
                self.model = TFN(**model_kwargs)
            else:
                state = None
                stats = dataset_statistics(h5, train_idx, model_kwargs["species"], cutoff)
                model_kwargs.setdefault("avg_num_neighbors", stats["avg_num_neighbors"])
                self.model = TFN(**model_kwargs)
                self.model.e0.copy_(torch.tensor(stats["e0"]))
                self.model.scale.fill_(stats["scale"])
        self.model = self.model.to(self.device, self.dtype)
        self.ema = copy.deepcopy(self.model)
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
            self.model.load_state_dict(state["state_dict"])
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
            t = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                 for k, v in t.items()}
            counts = label_counts(t, self.cfg.loss)
        else:
            counts = {}
        if self.world > 1:
            names = ["energy", "forces", "stress"] + list(self.cfg.loss.vectors)
            vec = _all_sum(torch.tensor([counts.get(n, 0) for n in names], dtype=torch.float64))
            counts = dict(zip(names, vec.tolist()))
        if len(mine):
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
            total += self.backward(glob)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.opt.step()
            with torch.no_grad():
                d = self.cfg.optim.ema_decay
                for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                    pe.mul_(d).add_(p, alpha=1 - d)
        return total / max(len(batches), 1)

    def validate(self) -> dict:
        loader = torch.utils.data.DataLoader(self.valid_set, batch_size=self.cfg.data.batch_size,
                                             collate_fn=collate_batch)
        metrics = evaluate_model(self.ema, loader, self.device)
        w = self.cfg.loss
        metrics["loss"] = (w.energy * metrics.get("energy_per_atom_rmse", 0) ** 2
                           + w.forces * metrics.get("forces_rmse", 0) ** 2
                           + w.stress * metrics.get("stress_rmse", 0) ** 2)
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
                    print(f"epoch {self.epoch}: train loss {train_loss:.4g}, valid "
                          + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)
        if self.rank == 0 and cfg.run.plots:
            self.plot()
        return self.history[-1] if self.history else {}

    def _write_csv(self) -> None:
        path = self.out / "metrics.csv"
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            cols = list(dict.fromkeys(k for row in self.history for k in row))
            writer = csv.DictWriter(fh, fieldnames=cols)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(tmp, path)

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
        fig.savefig(self.out / "learning_curve.png")
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
        fig.savefig(self.out / "parity.png")
        plt.close(fig)
