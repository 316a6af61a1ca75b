"""Bring your own model and data, end to end.

    python examples/byo/run_example.py [--out DIR]

1. Your data: a .npz with x_train, y_train, x_test, y_test (here: the 8x8 digits as uint8 images;
   edgeprune scales uint8 by 1/255, normalizes with the training split's mean/std and records both).
2. Your model: `my_model.py:make_net`, trained with plain PyTorch; weights saved as a state_dict.
3. edgeprune prunes, compacts, exports and checks the Raspberry Pi 5 budget, starting from your
   weights: given weights, the dense model is not retrained (train.epochs defaults to 0).
The same run from the command line:

    edgeprune build --target rpi5 --model examples/byo/my_model.py:make_net --weights DIR/net.pt \\
        --dataset DIR/digits.npz --finetune-epochs 10
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import edgeprune  # noqa: E402
from my_model import make_net  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/byo"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)

    # 1. the user's data file
    d = load_digits()
    x = (d.images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    tr, te = idx[:1400], idx[1400:]
    npz = a.out / "digits.npz"
    np.savez(npz, x_train=x[tr], y_train=d.target[tr], x_test=x[te], y_test=d.target[te])

    # 2. the user's model, trained their way, saved as a state_dict
    torch.manual_seed(0)
    net = make_net()
    xt = torch.from_numpy(x[tr].astype(np.float32)[:, None] / 255.0)
    xt = (xt - xt.mean()) / xt.std()  # edgeprune normalizes the same way: (x - mean) / std of the train split
    yt = torch.from_numpy(d.target[tr])
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(15):
        for i in range(0, len(xt), 64):
            loss = F.cross_entropy(net(xt[i:i + 64]), yt[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    weights = a.out / "net.pt"
    torch.save(net.state_dict(), weights)

    # 3. edgeprune, from the user's weights (no dense retraining: epochs default to 0 with weights)
    result = edgeprune.build(f"{HERE / 'my_model.py'}:make_net", dataset=str(npz), weights=str(weights), target="rpi5",
                             finetune_epochs=10, output=a.out, name="byo-rpi5")
    print(f"run folder: {result.run_dir}")
    print(f"accuracy: dense {result.metrics['dense']:.2f}, compact {result.metrics['compact']:.2f}")
    print(f"artifacts: {', '.join(sorted(result.artifacts))}")
    print(f"rpi5 budget: {'passed' if result.passed else 'FAILED'} (exit code {result.exit_code})")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
