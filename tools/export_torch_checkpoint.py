#!/usr/bin/env python
"""Write a dfkd_jax teacher, or a run's distilled student, as a PyTorch checkpoint in a zoo's key layout.

    python tools/export_torch_checkpoint.py teachers/fashion_mnist_lenet5 --zoo dfad --out lenet5.pt
    python tools/export_torch_checkpoint.py runs/fast --zoo fast --out student.pth [--step 600] [--module-prefix]

SRC is a teacher folder (teacher.json + variables/) or a run's workdir (its newest checkpoint's
student, or --step's). --zoo: dfad (bare state_dict, LeNets as conv1..fc2), cmi / fast / datafree /
dfkd ({'state_dict': ...}, LeNets as features.N / fc.N), flat (bare, canonical keys).
The file loads with ``model.load_state_dict(torch.load(FILE))`` (dfad, flat) or
``model.load_state_dict(torch.load(FILE)['state_dict'])`` (the others).
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import dfkd_jax  # noqa: F401
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfkd_jax.convert import ZOOS, export_checkpoint  # noqa: E402
from dfkd_jax.errors import UserError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a teacher folder, or a run's workdir (exports its student)")
    p.add_argument("--out", required=True, help="the .pt/.pth file to write")
    p.add_argument("--zoo", choices=sorted(ZOOS), default="flat", help="key layout and wrapper (default: flat)")
    p.add_argument("--module-prefix", action="store_true", help="prefix every key with DDP's 'module.'")
    p.add_argument("--step", type=int, help="for a run: the checkpoint's round (default: the newest)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        res = export_checkpoint(args.src, args.out, zoo=args.zoo, module_prefix=args.module_prefix, step=args.step)
    except (UserError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    at = f" of round {res.round}" if res.round is not None else ""
    print(f"{res.kind}{at}: {res.arch}, {res.num_params:,} parameters, {res.keys} PyTorch keys ({args.zoo} layout)")
    print(f"wrote {res.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
