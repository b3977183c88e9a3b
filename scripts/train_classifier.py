"""Train the class-coverage classifier shipped in ``qidbm/metrics/weights/``.

One classifier per data set (MNIST, Fashion-MNIST), trained on all 60,000 training images with
half of every batch binarised at 0.5 and small random shifts, so that it reads the binarised
samples of DBMs and the grey samples of GRBMs alike. The test accuracy on grey and on binarised
test images is written to a JSON card beside the weights (and printed).

    python scripts/train_classifier.py --dataset MNIST --data-root $QIDBM_DATA_DIR
    python scripts/train_classifier.py --dataset FashionMNIST --data-root $QIDBM_DATA_DIR
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qidbm.data import DATAMODULES
from qidbm.metrics.classifier import DigitClassifier, classifier_path


def random_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding)."""
    n = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pred = torch.cat([net(b).argmax(1) for b in x.split(2000)])
    return float((pred == y).double().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["MNIST", "FashionMNIST"], required=True)
    p.add_argument("--data-root", default=None, help="torchvision data root (else $QIDBM_DATA_DIR, else ./data)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="weights file (default: the shipped location)")
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    dm = DATAMODULES[a.dataset](root=a.data_root, encoding="continuous")
    x_tr, y_tr = dm.labelled_split("train")
    x_te, y_te = dm.labelled_split("test")
    x_tr, x_te = x_tr.float() / 255, x_te.float() / 255

    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    steps = a.epochs * (len(x_tr) // a.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps)
    t0 = time.time()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=steps, desc=f"classifier {a.dataset}") if tqdm else None
    for epoch in range(a.epochs):
        perm = torch.randperm(len(x_tr), generator=g)
        for i in range(len(x_tr) // a.batch_size):
            idx = perm[i * a.batch_size : (i + 1) * a.batch_size]
            xb, yb = random_shift(x_tr[idx], 2, g), y_tr[idx]
            half = xb.shape[0] // 2
            xb = torch.cat([(xb[:half] > 0.5).float(), xb[half:]])
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if bar:
                bar.update()
                bar.set_postfix(loss=f"{float(loss):.3f}")
    if bar:
        bar.close()
    net.eval()
    card = {
        "dataset": a.dataset,
        "test_accuracy_grey": accuracy(net, x_te, y_te),
        "test_accuracy_binarised": accuracy(net, (x_te > 0.5).float(), y_te),
        "test_images": len(x_te),
        "train_seconds": round(time.time() - t0, 1),
        "command": "python scripts/train_classifier.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "hardware": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}, "
                    f"{torch.get_num_threads()} threads".strip(),
        "params": sum(p.numel() for p in net.parameters()),
    }
    out = Path(a.out) if a.out else classifier_path(a.dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, tmp)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
