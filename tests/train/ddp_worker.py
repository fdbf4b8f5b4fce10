"""Run under torchrun: gradients of one global batch, all-reduced; rank 0 saves them."""

import sys

import numpy as np
import torch
import torch.distributed as dist

from tests.helpers import small_config
from tfn_md.train import Trainer

if __name__ == "__main__":
    data, out, grads_path = sys.argv[1:4]
    dist.init_process_group("gloo")
    trainer = Trainer(small_config(data, out), progress=False)
    trainer.backward(np.arange(7))  # an odd-sized global batch: uneven shards
    if dist.get_rank() == 0:
        torch.save({k: p.grad for k, p in trainer.model.named_parameters()}, grads_path)
    dist.destroy_process_group()
