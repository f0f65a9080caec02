"""torchvision's pure-Python files without its compiled operators (tests and tools only).

The registry's torchvision wheel does not import against the CPU build of torch here (its
``__init__`` loads compiled ops built for another torch). Its model files need none of them:
``load_torchvision(path)`` registers ``torchvision``, ``torchvision.models`` and
``torchvision.models.segmentation`` as bare packages whose ``__path__`` points into an
unpacked wheel (``pip download --no-deps torchvision==0.28.0``; ``path`` is the wheel, or the
folder it was unpacked into), so their ``__init__`` files never run (``extra`` names more of its
packages, e.g. ``torchvision.datasets`` for a training script), and adds
``torchvision.models.utils.load_state_dict_from_url`` (``torch.hub``'s), which older code
imports from there. ``wheel_path()`` reads ``$DFKD_JAX_TORCHVISION`` (None when unset or absent).
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
import zipfile

ENV = "DFKD_JAX_TORCHVISION"
_PACKAGES = ("torchvision", "torchvision.models", "torchvision.models.segmentation")


def wheel_path() -> str | None:
    path = os.environ.get(ENV)
    return path if path and os.path.exists(path) else None


def _unpacked(path: str) -> str:
    if os.path.isdir(path):
        if not os.path.isdir(os.path.join(path, "torchvision", "models")):
            raise FileNotFoundError(f"{path} holds no torchvision/models/ (unpack the torchvision wheel there)")
        return path
    folder = tempfile.mkdtemp(prefix="torchvision_")
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder, [n for n in zf.namelist() if n.startswith("torchvision/")])
    return folder


def load_torchvision(path: str, extra: tuple[str, ...] = ()):
    """Registers the bare torchvision packages (``_PACKAGES`` + ``extra``, each once) and returns
    ``torchvision.models``."""
    import torch.hub

    root = _unpacked(path)
    for name in _PACKAGES + tuple(extra):
        if getattr(sys.modules.get(name), "__stub__", False):
            continue
        module = types.ModuleType(name)
        module.__path__ = [os.path.join(root, *name.split("."))]
        module.__stub__ = True
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    if "torchvision.models.utils" not in sys.modules:
        utils = types.ModuleType("torchvision.models.utils")
        utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        sys.modules["torchvision.models.utils"] = sys.modules["torchvision.models"].utils = utils
    return sys.modules["torchvision.models"]


_MODULE_OF = {"resnet18": "resnet", "resnet34": "resnet", "resnet50": "resnet", "mobilenet_v2": "mobilenetv2"}


def torchvision_model(path: str, name: str, **kwargs):
    """``torchvision.models.<name>(**kwargs)`` (random weights) from the wheel at ``path``."""
    import importlib

    load_torchvision(path)
    return getattr(importlib.import_module(f"torchvision.models.{_MODULE_OF.get(name, name)}"), name)(**kwargs)
