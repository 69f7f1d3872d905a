"""M2 (Kingma et al. 2014) on mnist5k with 100 labels (10 per class): test accuracy of q(y|x).

Kingma et al. report 88.0% (M2 alone; 96.7% for M1+M2) with 100 labels on the full 50,000-image MNIST
training set; here the unlabeled pool is mnist5k's 4,000 training images (the other 3,900 labels
hidden), so fewer unlabeled digits inform the classifier. Network: one hidden layer of 500 softplus
units per network, latent 50, batch 100, Adam 1e-3. ``aux_weight`` = alpha / N: each labeled point's
log q(y|x) is weighted aux_weight * N / N_labeled (Kingma et al.'s alpha = 0.1 N is aux_weight 0.1,
i.e. 4 per labeled point here).

How the default aux_weight was chosen, without the 1,000 test images (``--select``): the 4,000
training images are split once (``torch.randperm`` seeded ``--seed``) into 3,500 for fitting, of
which 10 per class keep their labels (``hide_labels(10, seed)``), and 500 for validation, whose labels
are used only to score q(y|x). Each candidate in ``--candidates`` is fitted for ``--epochs`` epochs on
the 3,500 and scored on the 500; the best validation accuracy wins. The run that follows (plain mode)
refits on all 4,000 training images with the chosen value and scores the 1,000 test images once.

    python benchmarks/bench_m2.py --select [--candidates 0.1,0.5,2,5,20] [--epochs 30] [--seed 0]
    python benchmarks/bench_m2.py [--epochs 30] [--lr 1e-3] [--aux-weight M2's default] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

import ppvae
from ppvae.models import M2

NUM_VALIDATION = 500  # training images held out to score the candidates (labels used for scoring only)


def validation_split(train, labels_per_class: int, seed: int):
    """(fit part with ``labels_per_class`` labels per class, validation part with all its labels)."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    fit_part = train.subset(perm[NUM_VALIDATION:]).hide_labels(labels_per_class, seed)
    return fit_part, train.subset(perm[:NUM_VALIDATION])


def train_and_score(train, scored, aux_weight, args, tag):
    """Fit M2 on ``train`` and return the accuracy of q(y|x) on ``scored`` (printed every --eval-every)."""
    model = M2(aux_weight=aux_weight)
    per_epoch = len(train) // 100
    start = time.perf_counter()

    def report(trainer):
        if trainer.step % (per_epoch * args.eval_every) == 0:
            print(f"  aux_weight {aux_weight:g} epoch {trainer.step // per_epoch:3d}: {tag} accuracy "
                  f"{model.accuracy(scored):.4f} ({time.perf_counter() - start:.0f} s)", flush=True)

    ppvae.fit(model, train, epochs=args.epochs, batch_size=100, lr=args.lr, seed=args.seed, callbacks=[report],
              progress=False)
    return model.accuracy(scored), time.perf_counter() - start


def select(args):
    train = ppvae.load_dataset("mnist5k", split="train")
    fit_part, val = validation_split(train, args.labels_per_class, args.seed)
    scores = {}
    for w in (float(v) for v in args.candidates.split(",")):
        scores[w], secs = train_and_score(fit_part, val, w, args, "validation")
        print(f"aux_weight {w:g}: validation accuracy {scores[w]:.4f} on {len(val)} held-out training images "
              f"({secs:.0f} s)", flush=True)
    best = max(scores, key=scores.get)
    print(f"selected aux_weight = {best:g} (validation accuracy {scores[best]:.4f}; {args.epochs} epochs, "
          f"seed {args.seed}, {len(fit_part)} fitting images with {int((fit_part.y >= 0).sum())} labels)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--aux-weight", type=float, default=M2().aux_weight)
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--select", action="store_true", help="choose aux_weight on a validation split of the training set")
    p.add_argument("--candidates", default="0.1,0.5,2,5,20")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.select:
        return select(args)
    train = ppvae.load_dataset("mnist5k", split="train", labels_per_class=args.labels_per_class, label_seed=args.seed)
    test = ppvae.load_dataset("mnist5k", split="test")
    acc, secs = train_and_score(train, test, args.aux_weight, args, "test")
    print(f"M2 on mnist5k, {int((train.y >= 0).sum())} labels ({args.labels_per_class} per class), {len(train)} "
          f"training images, {args.epochs} epochs, aux_weight {args.aux_weight:g}, seed {args.seed}: test accuracy "
          f"of q(y|x) = {acc:.4f} on {len(test)} images ({secs:.0f} s)")


if __name__ == "__main__":
    main()
