#!/usr/bin/env python
"""Convert a PyTorch teacher checkpoint (CMI/Fast, DFAD or DDP-wrapped) into a dfkd_jax teacher folder.

    python tools/convert_torch_checkpoint.py cifar10_resnet34.pth --dataset cifar10 --out teachers/cifar10_resnet34
    python tools/convert_torch_checkpoint.py cifar100-resnet34_8x.pt --arch resnet34 --dataset cifar100 \\
        --normalization cifar10 --out teachers/dfad_cifar100_resnet34

The architecture is detected from the keys and shapes unless --arch is given; --normalization
names the dataset whose mean/std the teacher was trained with (default: --dataset).
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import dfkd_jax  # noqa: F401
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfkd_jax.convert import CheckpointMismatchError, convert_checkpoint  # noqa: E402
from dfkd_jax.data.specs import SPECS  # noqa: E402
from dfkd_jax.models import ARCHITECTURES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="PyTorch checkpoint (.pt/.pth): bare state_dict, {'state_dict': ...}, or module.-prefixed")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), help="architecture (default: detect from the keys)")
    p.add_argument("--dataset", required=True, choices=sorted(SPECS), help="dataset the teacher classifies")
    p.add_argument("--out", required=True, help="teacher folder to write")
    p.add_argument("--normalization", choices=sorted(SPECS),
                   help="dataset whose mean/std the teacher was trained with (default: --dataset)")
    p.add_argument("--num-classes", type=int, help="expected classes (default: read from the head)")
    p.add_argument("--test-accuracy", type=float, help="record a known test accuracy in the metadata")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load with weights_only=False (only for files from a trusted source)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        res = convert_checkpoint(args.src, args.out, arch=args.arch, dataset=args.dataset,
                                 normalization=args.normalization, num_classes=args.num_classes,
                                 trust_pickle=args.trust_pickle, test_accuracy=args.test_accuracy)
    except (CheckpointMismatchError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    how = "detected" if res.detected else "given"
    print(f"architecture: {res.arch} ({how}), {res.num_classes} classes, key scheme {res.key_scheme}")
    print(f"parameters: {res.num_params:,}")
    print(f"normalisation: {res.meta.normalization} mean {res.meta.mean} std {res.meta.std}")
    print(f"wrote teacher to {res.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
