"""The architectures dfkd_jax lists for each public zoo, built from that zoo's own model classes.

Used by ``tools/conversion_report.py --reference-repo DIR``: the user's checkout of the zoo
(never part of this project) is imported in place. Each zoo is recognised by a file it holds;
``rows(zoo, load)`` gives one ``Row`` per architecture, with a constructor that calls the
zoo's class through ``load(dotted_module)``, the input it is checked on and the checkpoint
format that zoo's training code writes. Architectures of a zoo that dfkd_jax does not list
are ``Row``s with ``arch=None`` and a note, so the report names them.
"""

from __future__ import annotations

import ast
import dataclasses
import types
from typing import Callable


@dataclasses.dataclass
class Row:
    name: str                   # the zoo's name for it
    arch: str | None            # dfkd_jax architecture or generator; None: not listed by dfkd_jax
    build: Callable | None = None
    shape: tuple = (3, 32, 32)  # input (C, H, W); (nz,) for generators
    fmt: str = "state_dict"     # 'state_dict' ({'state_dict': ...}), 'model' ({'model': ...}), 'bare', 'pickle'
    note: str = ""
    generator_kwargs: dict = dataclasses.field(default_factory=dict)  # what a state_dict cannot tell (bn_eps)


# RepDistiller's CIFAR ResNets and VGGs (also in CMI/Fast's resnet_tiny.py and vgg.py; their MODEL_DICT
# registers all but resnet14, resnet44, vgg16 and vgg19)
TINY_RESNETS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
                "resnet32x4")
VGGS = ("vgg8", "vgg11", "vgg13", "vgg16", "vgg19")

# DeepLabV3 inputs: at 64x64 the dilated ASPP branches see only the centre tap of the 8x8 map; at 296x296
# (a 37x37 map) every rate (12, 24, 32 or 36) reaches inside it
SEG_SIDES = (64, 296)
SEG_NOTE = {64: "", 296: "; every ASPP rate inside the 37x37 map"}

# zoo -> (a file that identifies its checkout, a description)
ZOOS = {
    "fast-datafree": ("datafree/synthesis/fast_meta.py", "zju-vipa/Fast-Datafree"),
    "ljrprocc": ("datafree/models/score_sde/__init__.py", "ljrprocc/DataFree, ljrprocc/DFKD"),
    "cmi": ("datafree/models/deeplab/modeling.py", "zju-vipa/CMI"),
    "dfad": ("network/resnet_8x.py", "VainF/Data-Free-Adversarial-Distillation"),
    "dafl": ("Data-Efficient-Model-Compression/DAFL/DAFL-train.py", "huawei-noah DAFL (Efficient-Computing)"),
    "zskt": ("models/selector.py", "polo5/ZeroShotKnowledgeTransfer"),
    "pre-dfkd": ("networks/squeezenet.py", "kuluhan/PRE-DFKD"),
    "repdistiller": ("models/ShuffleNetv1.py", "HobbitLong/RepDistiller"),
}


def _datafree(load, ljrprocc: bool, torchvision_models) -> list[Row]:
    """CMI / Fast-Datafree / ljrprocc: ``registry.py``'s MODEL_DICT, IMAGENET_MODEL_DICT and
    SEGMENTATION_MODEL_DICT, the LeNets and generators of ``datafree/models``."""
    c = "datafree.models.classifiers."
    rows = [Row(f"wrn{d}_{w}", f"wrn{d}_{w}", lambda d=d, w=w: getattr(load(c + "wresnet"), f"wrn_{d}_{w}")(10))
            for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))]
    rows += [Row(n, n, lambda n=n: getattr(load(c + "resnet_tiny"), n)(10))
             for n in TINY_RESNETS]
    rows += [Row(n, n, lambda n=n: getattr(load(c + "vgg"), f"{n}_bn")(num_classes=10)) for n in VGGS]
    rows += [Row("shufflenetv2", "shufflenetv2", lambda: load(c + "shufflenetv2").shuffle_v2(10)),
             Row("mobilenetv2", "mobilenetv2", lambda: load(c + "mobilenetv2").mobilenet_v2(num_classes=10))]
    rows += [Row(n, n, lambda n=n: getattr(load(c + "resnet"), n)(10)) for n in ("resnet18", "resnet34", "resnet50")]
    rows += [Row("lenet.LeNet5", "lenet5", lambda: load(c + "lenet").LeNet5(nc=1, num_classes=10), (1, 32, 32)),
             Row("lenet.LeNet5Half", "lenet5_half", lambda: load(c + "lenet").LeNet5Half(nc=1, num_classes=10),
                 (1, 32, 32))]
    names = ("resnet18", "resnet34", "resnet50") if ljrprocc else ("resnet18", "resnet50")
    rows += [Row(f"{n}_imagenet", f"{n}_imagenet", lambda n=n: getattr(load(c + "resnet_in"), n)(), (3, 64, 64),
                 note="1,000 classes, checked on 64x64") for n in names]
    if torchvision_models is not None:
        rows.append(Row("mobilenetv2_imagenet (torchvision)", "mobilenetv2",
                        lambda: torchvision_models("mobilenet_v2"), (3, 64, 64), note="1,000 classes, 64x64"))
    else:
        rows.append(Row("mobilenetv2_imagenet (torchvision)", None, note="not checked: needs --torchvision"))
    d = "datafree.models.deeplab.modeling"
    for side in SEG_SIDES:
        rows += [Row("deeplabv3_resnet50", "deeplabv3_resnet50_cmi",
                     lambda: load(d).deeplabv3_resnet50(num_classes=13, output_stride=8, pretrained_backbone=False),
                     (3, side, side), note=f"13 classes{SEG_NOTE[side]}"),
                 Row("deeplabv3_mobilenet", "deeplabv3_mobilenetv2_cmi",
                     lambda: load(d).deeplabv3_mobilenet(num_classes=13, output_stride=8, pretrained_backbone=False),
                     (3, side, side), note=f"13 classes{SEG_NOTE[side]}")]
    g = "datafree.models.generator"
    rows.append(Row("generator.Generator", "cmi", lambda: load(g).Generator(nz=256, ngf=64, img_size=32, nc=3), (256,)))
    if hasattr(load(g), "LargeGenerator"):  # CMI's (DFQ's); not in Fast-Datafree
        rows.append(Row("generator.LargeGenerator", "large",
                        lambda: load(g).LargeGenerator(nz=256, ngf=64, img_size=32, nc=3), (256,)))
    if ljrprocc:  #  (CuDFKD, AdaDFKD): datafree_kd.py's DCGAN_Generator_CIFAR10(nz, ngf=64, d=depth)
        rows.append(Row("generator.DCGAN_Generator_CIFAR10 (d=2)", "large",
                        lambda: load(g).DCGAN_Generator_CIFAR10(nz=512, ngf=64, nc=3, img_size=32, d=2), (512,)))
        rows += [Row(f"generator.{n}", None, note=f"not listed by dfkd_jax{extra}") for n, extra in (
            ("DCGAN_Generator_CIFAR10 (d=3)", ""), ("DCGAN_Generator", ""), ("DCGAN_Generator_CIFAR10_more", ""),
            ("DCGAN_CondGenerator", ""), ("TinyGenerator", " (ljrprocc/DFKD only)"))]
    return rows


def _dafl_generator(source: str):
    """DAFL's Generator, defined inside DAFL-train.py on a global ``opt``: the class alone, executed with
    DAFL's MNIST options (latent_dim 100, img_size 32, channels 1)."""
    import torch.nn as nn

    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Generator")
    namespace = {"nn": nn, "opt": types.SimpleNamespace(latent_dim=100, img_size=32, channels=1)}
    exec(compile(ast.Module([cls], []), "DAFL-train.py:Generator", "exec"), namespace)
    return namespace["Generator"]()


def rows(zoo: str, load: Callable, read: Callable, torchvision_models=None) -> list[Row]:
    """The rows of ``zoo``; ``load(dotted)`` imports a module of the checkout, ``read(path)`` reads a file of it."""
    if zoo in ("cmi", "fast-datafree", "ljrprocc"):
        return _datafree(load, zoo == "ljrprocc", torchvision_models)
    if zoo == "dfad":
        seg = "network.segmentation.deeplabv3"
        out = [Row("lenet.LeNet5", "lenet5", lambda: load("network.lenet").LeNet5(), (1, 32, 32), "bare"),
               Row("lenet.LeNet5Half", "lenet5_half", lambda: load("network.lenet").LeNet5Half(), (1, 32, 32), "bare")]
        out += [Row(f"resnet_8x.ResNet{n}_8x", f"resnet{n}", lambda n=n: getattr(load("network.resnet_8x"), f"ResNet{n}_8x")(10),
                    fmt="bare") for n in (18, 34, 50)]
        out += [Row("gan.GeneratorA (MNIST)", "dafl", lambda: load("network.gan").GeneratorA(nz=100, nc=1, img_size=32),
                    (100,), "bare"),
                Row("gan.GeneratorA (CIFAR)", "dafl", lambda: load("network.gan").GeneratorA(nz=256, nc=3, img_size=32),
                    (256,), "bare"),
                Row("gan.GeneratorB", "dfad_b", lambda: load("network.gan").GeneratorB(nz=256, ngf=64, nc=3, img_size=128),
                    (256,), "bare")]
        if torchvision_models is None:
            out += [Row(n, None, note="not checked: needs --torchvision (DFAD's DeepLab imports torchvision)")
                    for n in ("deeplabv3_resnet50", "deeplabv3_mobilenet")]
        else:
            for side in SEG_SIDES:
                out += [Row("deeplabv3_resnet50", "deeplabv3_resnet50",
                            lambda: load(seg).deeplabv3_resnet50(num_classes=11, pretrained_backbone=False),
                            (3, side, side), "bare", f"11 classes{SEG_NOTE[side]}"),
                        Row("deeplabv3_mobilenet", "deeplabv3_mobilenetv2",
                            lambda: load(seg).deeplabv3_mobilenet(num_classes=11, pretrained_backbone=False),
                            (3, side, side), "bare", f"11 classes{SEG_NOTE[side]}")]
        return out
    if zoo == "dafl":
        base = "Data-Efficient-Model-Compression.DAFL."
        out = [Row("lenet.LeNet5", "lenet5", lambda: load(base + "lenet").LeNet5(), (1, 32, 32), "pickle"),
               Row("lenet.LeNet5Half", "lenet5_half", lambda: load(base + "lenet").LeNet5Half(), (1, 32, 32), "pickle")]
        out += [Row(f"resnet.ResNet{n}", f"resnet{n}", lambda n=n: getattr(load(base + "resnet"), f"ResNet{n}")(10),
                    fmt="pickle") for n in (18, 34, 50)]
        out.append(Row("DAFL-train.py Generator (MNIST)", "dafl",
                       lambda: _dafl_generator(read("Data-Efficient-Model-Compression/DAFL/DAFL-train.py")), (100,),
                       "bare", "BatchNorm eps 0.8; DAFL saves no generator: its state_dict", {"bn_eps": 0.8}))
        return out
    if zoo == "zskt":
        wrn = [Row(f"WideResNet({d}, widen {w})", f"wrn{d}_{w}",
                   lambda d=d, w=w: load("models.wresnet").WideResNet(depth=d, num_classes=10, widen_factor=w, dropRate=0.0))
               for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))]
        return wrn + [Row("generator.Generator", "zskt", lambda: load("models.generator").Generator(100), (100,), "bare"),
                      Row("lenet.LeNet32", None, note="not listed by dfkd_jax")]
    if zoo == "pre-dfkd":
        return [Row("lenet.LeNet5", "lenet5", lambda: load("networks.lenet").LeNet5(10), (1, 32, 32), "bare"),
                Row("lenet.LeNet5Half", "lenet5_half", lambda: load("networks.lenet").LeNet5Half(10), (1, 32, 32), "bare"),
                Row("resnet.ResNet18", "resnet18", lambda: load("networks.resnet").ResNet18(10), fmt="bare"),
                Row("resnet.ResNet34", "resnet34", lambda: load("networks.resnet").ResNet34(10), fmt="bare"),
                Row("resnet.ResNet50", "resnet50", lambda: load("networks.resnet").ResNet50(10), fmt="bare"),
                Row("generator.Generator", None, note="not listed by dfkd_jax: its spectral-norm generator "
                                                      "(`dafl_sn`) has no PyTorch key layout"),
                Row("mobilenet, squeezenet", None, note="not listed by dfkd_jax")]
    if zoo == "repdistiller":
        m = "models."
        out = [Row(n, n, lambda n=n: getattr(load(m + "resnet"), n)(num_classes=10), fmt="model")
               for n in TINY_RESNETS]
        out += [Row(f"wrn_{d}_{w}", f"wrn{d}_{w}", lambda d=d, w=w: getattr(load(m + "wrn"), f"wrn_{d}_{w}")(num_classes=10),
                    fmt="model") for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))]
        out += [Row(n, n, lambda n=n: getattr(load(m + "vgg"), f"{n}_bn")(num_classes=10), fmt="model")
                for n in VGGS]
        out += [Row("ShuffleV2", "shufflenetv2", lambda: load(m + "ShuffleNetv2").ShuffleV2(num_classes=10), fmt="model"),
                Row("ResNet50", "resnet50", lambda: load(m + "resnetv2").ResNet50(num_classes=10), fmt="model")]
        out += [Row(n, None, note="not listed by dfkd_jax")
                for n in ("MobileNetV2 (mobile_half)", "ShuffleV1")]
        return out
    raise KeyError(zoo)
