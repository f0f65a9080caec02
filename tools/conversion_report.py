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

Against the authors' own classes (a checkout you hold; nothing of it is copied):

    python tools/conversion_report.py --reference-repo ~/src/Fast-Datafree
    python tools/conversion_report.py --reference-repo ~/src/Data-Free-Adversarial-Distillation \
        --torchvision ~/wheels/torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl

recognises the zoo from its files (``tools/reference_zoos.py``), imports its model files in
place (its packages are registered bare, so their ``__init__`` files and training code never
run), builds every architecture dfkd_jax lists for that zoo with random weights and random
BatchNorm statistics, saves it as that zoo's training code does, converts the file with
dfkd_jax (architecture detected from the keys) and compares eval-mode outputs. ``--torchvision``
(a torchvision wheel or its unpacked folder) loads torchvision's pure-Python model files under
a stub (tools/torchvision_stub.py), for zoos that import torchvision.
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
sys.path.insert(0, os.path.join(ROOT, "tools"))

CLASSIFIERS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
               "resnet32x4", "resnet50", "vgg13", "vgg16", "vgg19", "mobilenetv2", "shufflenetv2")
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

    module = R.build(arch, num_classes) if arch in R.VGG_CFG else Z.build(arch, num_classes)
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


def _repo_loader(root: str):
    """``load(dotted)``: imports a module of the checkout at ``root``, its parent packages registered bare."""
    import importlib
    import types

    def load(dotted: str):
        parts = dotted.split(".")
        for i in range(1, len(parts)):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                package = types.ModuleType(name)
                package.__path__ = [os.path.join(root, *parts[:i])]
                sys.modules[name] = package
        return importlib.import_module(dotted)

    return load


def _save_as(module, fmt: str, path: str) -> None:
    import torch

    sd = module.state_dict()
    obj = {"state_dict": {"state_dict": sd, "epoch": 3, "best_acc1": 0.5},
           "model": {"model": sd, "epoch": 3, "best_acc": 0.5}, "bare": sd, "pickle": module}[fmt]
    torch.save(obj, path)


def check_reference(row, folder: str) -> dict:
    """One architecture of a zoo, from its own class: save, detect, convert, compare outputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torch_reference as R

    from dfkd_jax.convert import convert_with_info, detect_architecture, generator_config, load_torch_state_dict
    from dfkd_jax.models import GENERATORS, build_generator, build_model

    module = R.randomize_(row.build(), seed=len(row.name)).eval()
    path = os.path.join(folder, "checkpoint.pth")
    _save_as(module, row.fmt, path)
    sd = load_torch_state_dict(path, trust_pickle=row.fmt == "pickle")
    detected = detect_architecture(sd)
    if detected != row.arch:
        raise ValueError(f"detected as {detected!r}, not {row.arch!r}")
    variables, info = convert_with_info(sd, row.arch)
    x = torch.randn(2, *row.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = module(x)
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
    if row.arch in GENERATORS:
        model = build_generator(row.arch, **generator_config(sd, row.arch), **row.generator_kwargs)
        out = model.apply(variables, jnp.asarray(x.numpy()), train=False)
        ref = ref.transpose(0, 2, 3, 1)
    else:
        xin = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
        out, _ = build_model(row.arch, info.free_dims["K"]).apply(variables, xin, train=False)
        if np.ndim(out) == 4:
            ref = ref.transpose(0, 2, 3, 1)
    out = np.asarray(out)
    return {"keys": len(info.state_dict), "rel_err": float(np.abs(out - ref).max() / np.abs(ref).max())}


def reference_report(root: str, torchvision: str | None, commit: str | None = None, only=()) -> int:
    """Prints the markdown table for the zoo checked out at ``root``; returns the number of failures."""
    import subprocess

    import reference_zoos as Z

    root = os.path.abspath(os.path.expanduser(root))
    zoo = next((name for name, (marker, _) in Z.ZOOS.items() if os.path.isfile(os.path.join(root, marker))), None)
    if zoo is None:
        raise SystemExit(f"{root} is none of the known zoos' checkouts: "
                         + "; ".join(f"{desc} (has {marker})" for marker, desc in Z.ZOOS.values()))
    try:
        commit = commit or subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    models = None
    if torchvision:
        import torchvision_stub

        torchvision_stub.load_torchvision(torchvision)
        models = lambda name: torchvision_stub.torchvision_model(torchvision, name)  # noqa: E731
    sys.path.insert(0, root)  # for modules that import their siblings by top-level name
    load = _repo_loader(root)

    def read(rel: str) -> str:
        with open(os.path.join(root, rel)) as f:
            return f.read()

    print(f"{Z.ZOOS[zoo][1]} at {commit} ({root})\n")
    print("| zoo's model | dfkd_jax arch | checked on | keys | max rel. error | result |")
    print("|---|---|---|---|---|---|")
    failures = 0
    for row in Z.rows(zoo, load, read, models):
        if only and row.name not in only:
            continue
        shape = "x".join(map(str, row.shape[1:] + row.shape[:1])) if len(row.shape) == 3 else f"z {row.shape[0]}"
        if row.arch is None:
            print(f"| {row.name} | - | - | - | - | {row.note or 'not listed by dfkd_jax'} |", flush=True)
            continue
        t0 = time.time()
        try:
            with tempfile.TemporaryDirectory() as folder:
                r = check_reference(row, folder)
            ok = r["rel_err"] <= 1e-4
            result = ("OK" if ok else "FAIL") + (f" ({row.note})" if row.note else "")
            print(f"| {row.name} | `{row.arch}` | {shape} | {r['keys']} | {r['rel_err']:.1e} | {result} |", flush=True)
        except Exception as e:  # noqa: BLE001 - a report row per failure
            ok = False
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:300].replace("|", "/")
            print(f"| {row.name} | `{row.arch}` | {shape} | - | - | FAIL: {msg} |", flush=True)
        failures += not ok
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"\n{failures} failure(s)")
    return failures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default=",".join(CLASSIFIERS), help="classifiers (comma-separated; 'none')")
    p.add_argument("--deeplab", default=",".join(f"{a}:{s}" for a, s in DEEPLAB),
                   help="DeepLabV3 arch:side pairs (comma-separated; 'none')")
    p.add_argument("--reference-repo", metavar="DIR",
                   help="check the architectures of the zoo checked out in DIR against its own classes")
    p.add_argument("--torchvision", metavar="PATH", help="torchvision wheel (or its unpacked folder), for zoos that "
                   "import torchvision; default $DFKD_JAX_TORCHVISION")
    p.add_argument("--only", default="", help="with --reference-repo: only these of the zoo's models (comma-separated)")
    p.add_argument("--commit", help="the checkout's commit, where DIR is no git checkout (an unpacked archive)")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    if args.reference_repo:
        sys.exit(1 if reference_report(args.reference_repo, args.torchvision or os.environ.get("DFKD_JAX_TORCHVISION"),
                                           args.commit, [n for n in args.only.split(",") if n]) else 0)
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
