"""Train a teacher on a dataset's real training split and write a teacher checkpoint.

    python tools/train_teacher.py --dataset fashion_mnist --arch lenet5 --out teachers/fmnist_lenet5
    python tools/train_teacher.py --dataset fashion_mnist --arch lenet5 --label_noise 0.2 --out teachers/noisy
    python tools/train_teacher.py --dataset fashion_mnist32x3 --arch wrn16_2 --train_examples 16384 --epochs 2 \
        --out teachers/fashion_mnist32x3_wrn16_2
    python tools/train_teacher.py --dataset fashion_mnist_scenes --arch deeplabv3_resnet50@0.25 --out teachers/scenes
    # a student trained by KD from a teacher on the real training images (no labels with --kd_alpha 1)
    python tools/train_teacher.py --dataset fashion_mnist_scenes --arch deeplabv3_mobilenetv2@0.5 \
        --kd_from teachers/scenes --out students/scenes_kd

The folder it writes (teacher.json + variables/) is what ``--config.teacher.checkpoint`` takes.
The state is also saved after every epoch in ``OUT.epochs/``: rerunning an interrupted command
resumes after its last finished epoch (and refuses if the settings changed).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--arch", default="lenet5")
    p.add_argument("--out", required=True, help="teacher folder to write")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--augment", action="store_true", help="random crop (pad 4) and flip")
    p.add_argument("--label_noise", type=float, default=0.0, help="fraction of training labels replaced at random")
    p.add_argument("--train_examples", type=int, default=0,
                   help="train on this many training examples drawn at random (0 = all)")
    p.add_argument("--kd_from", default="", help="train by knowledge distillation from this teacher folder")
    p.add_argument("--kd_tau", type=float, default=1.0, help="KD temperature")
    p.add_argument("--kd_alpha", type=float, default=1.0, help="weight of KD; 1 - kd_alpha weighs the labels' CE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_dir", default="")
    p.add_argument("--source_dir", default="")
    args = p.parse_args(argv)

    from dfkd_jax.supervised import train_teacher
    from dfkd_jax.teacher import load_teacher, save_teacher
    from dfkd_jax.data import DatasetNotFoundError
    try:
        kd_teacher = load_teacher(args.kd_from) if args.kd_from else None
        variables, meta = train_teacher(args.arch, args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                                        lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
                                        augment_data=args.augment, label_noise=args.label_noise,
                                        train_examples=args.train_examples, seed=args.seed,
                                        data_dir=args.data_dir, source_dir=args.source_dir,
                                        distill_from=kd_teacher, kd_tau=args.kd_tau, kd_alpha=args.kd_alpha,
                                        checkpoint_dir=os.path.abspath(args.out) + ".epochs")
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    path = save_teacher(args.out, variables, meta)
    if "test_miou" in meta.extra:
        score = f"test mIoU {100 * meta.extra['test_miou']:.2f}%, pixel accuracy {100 * meta.test_accuracy:.2f}%"
    else:
        score = f"test accuracy {100 * meta.test_accuracy:.2f}%"
    print(f"{args.arch} on {args.dataset}: {score}; saved to {path}")


if __name__ == "__main__":
    main()
