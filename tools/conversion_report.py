"""Parameter counts and PyTorch -> Flax conversion errors of the CMI/Fast zoo's classifiers and DeepLabV3.

    python tools/conversion_report.py                      # every new classifier and DeepLabV3, markdown
    python tools/conversion_report.py --archs resnet8,vgg13 --deeplab none

For each architecture: the project's PyTorch reference module (tests/torch_reference.py and
tests/torch_reference_zoo.py, written from the references' definitions) with random weights
and non-trivial BatchNorm statistics is saved in the three checkpoint formats (a bare
state_dict, ``{'state_dict': ...}``, ``module.``-prefixed keys); each file is read back, its
architecture detected from the keys and converted. The table gives the parameter counts of
both modules, whether the three conversions are identical, and the relative error
``max |flax - torch| / max |torch|`` of the eval-mode logits (per-pixel logits for DeepLabV3).
Needs torch (the optional extra). The same checks, with the 1e-4 bound, are in
tests/test_convert_zoo.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

CLASSIFIERS = ("resnet8", "resnet20", "resnet32", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "resnet50",
               "vgg13", "mobilenetv2", "shufflenetv2")
# (arch, input side): full width at 64x64, and at 1/8 width on 296x296 inputs, where every ASPP rate
# reaches inside the output-stride-8 map (37x37)
DEEPLAB = (("deeplabv3_resnet50", 64), ("deeplabv3_mobilenetv2", 64), ("deeplabv3_resnet50_cmi", 64),
           ("deeplabv3_mobilenetv2_cmi", 64), ("deeplabv3_resnet50@0.125", 296), ("deeplabv3_resnet50_cmi@0.125", 296))
FORMATS = ("bare", "wrapped", "module")


def check(arch: str, num_classes: int, side: int, folder: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torch_reference as R
    import torch_reference_zoo as Z

    from dfkd_jax.convert import convert_with_info, detect_architecture, load_torch_state_dict
    from dfkd_jax.models import build_model

    vgg13 = [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]
    module = R.BlockVGG(vgg13, num_classes) if arch == "vgg13" else Z.build(arch, num_classes)
    module = R.randomize_(module, seed=len(arch)).eval()
    sd = module.state_dict()
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = module(x).numpy()
    converted = []
    for fmt in FORMATS:
        obj = {"bare": sd, "wrapped": {"state_dict": sd, "epoch": 3}, "module": {f"module.{k}": v for k, v in sd.items()}}
        path = os.path.join(folder, f"{fmt}.pth")
        torch.save(obj[fmt], path)
        loaded = load_torch_state_dict(path)
        detected = detect_architecture(loaded)
        if detected != arch:
            raise SystemExit(f"{arch}: the {fmt} checkpoint was detected as {detected!r}")
        converted.append(convert_with_info(loaded, arch)[0])
    same = all(all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(converted[0])))
               for v in converted[1:])
    model = build_model(arch, num_classes)
    logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(converted[0],
                                                                     jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
    out = np.asarray(logits)
    if out.ndim == 4:
        out = out.transpose(0, 3, 1, 2)
    return {"arch": arch, "input": f"{side}x{side}x3", "classes": num_classes,
            "flax_params": sum(int(np.size(v)) for v in jax.tree.leaves(converted[0]["params"])),
            "torch_params": sum(p.numel() for p in module.parameters()), "identical": same,
            "rel_err": float(np.abs(out - ref).max() / np.abs(ref).max())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default=",".join(CLASSIFIERS), help="classifiers (comma-separated; 'none')")
    p.add_argument("--deeplab", default=",".join(f"{a}:{s}" for a, s in DEEPLAB),
                   help="DeepLabV3 arch:side pairs (comma-separated; 'none')")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    cases = [(a, 10, 32) for a in args.archs.split(",") if a and a != "none"]
    cases += [(a, 11, int(s)) for a, s in (c.split(":") for c in args.deeplab.split(",") if c and c != "none")]
    print("| arch | input | classes | params (Flax) | params (PyTorch) | 3 formats identical | rel. logit error |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for arch, k, side in cases:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as folder:
            r = check(arch, k, side, folder)
        worst = max(worst, r["rel_err"])
        print(f"| `{r['arch']}` | {r['input']} | {k} | {r['flax_params']:,} | {r['torch_params']:,} | "
              f"{'yes' if r['identical'] else 'NO'} | {r['rel_err']:.1e} |", flush=True)
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"\nworst relative error {worst:.1e}")


if __name__ == "__main__":
    main()
