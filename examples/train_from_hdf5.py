"""From nothing to MD: sample a small GFN2-xTB dataset of water, train a TFN on it,
evaluate it, and run MD with the result.

    python examples/train_from_hdf5.py [--quick] [--out example_run]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("example_run"))
parser.add_argument("--quick", action="store_true", help="tiny dataset, 2 epochs (tests)")
args = parser.parse_args()
out = args.out.resolve()
out.mkdir(parents=True, exist_ok=True)
n = 20 if args.quick else 200
epochs = 2 if args.quick else 30
env = {**os.environ, "OMP_NUM_THREADS": "1"}


def tfn_md(*argv):
    cmd = [sys.executable, "-m", "tfn_md.cli", "--threads", "1", *map(str, argv)]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, env=env)


data = out / "water.h5"
if data.exists():
    data.unlink()
tfn_md("data", "sample", "--molecule", "H2O", "--temperature", "300", "600", "--n", n,
       "--interval", 5, "--seed", 0, "-o", data)
tfn_md("data", "split", data, "--train", 0.8, "--val", 0.1, "--test", 0.1, "-o", out / "water")
config = out / "train.toml"
config.write_text(f"""
[data]
train = "{out / 'water_train.h5'}"
valid = "{out / 'water_val.h5'}"
batch_size = 4
[model]
channels = 8
l_max = 1
layers = 2
cutoff = 4.0
[optim]
lr = 1e-2
epochs = {epochs}
ema_decay = 0.9
[run]
out = "{out / 'run'}"
plots = false
""")
tfn_md("train", config)
tfn_md("eval", out / "run" / "best.pt", out / "water_test.h5")
tfn_md("md", "--potential", out / "run" / "best.pt", "--molecule", "H2O", "--steps",
       50 if args.quick else 1000, "-o", out / "water_md.traj")
print(json.dumps({"dataset": str(data), "model": str(out / "run" / "best.pt")}))
