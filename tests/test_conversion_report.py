"""tools/conversion_report.py --reference-repo: the parts that need no zoo checkout (the checks against the
authors' classes run on a checkout the user holds; their results are in docs/models.md)."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import conversion_report  # noqa: E402
import reference_zoos  # noqa: E402


def test_repo_loader_skips_package_init_files(tmp_path):
    """A checkout's packages are registered bare: their __init__ (training code, heavy imports) never runs,
    while relative imports between its model files work."""
    pkg = tmp_path / "zoo_pkg_c39" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "zoo_pkg_c39" / "__init__.py").write_text("raise ImportError('the package __init__ ran')\n")
    (pkg / "__init__.py").write_text("raise ImportError('the package __init__ ran')\n")
    (pkg / "blocks.py").write_text("WIDTH = 7\n")
    (pkg / "net.py").write_text("from .blocks import WIDTH\n\ndef build():\n    return WIDTH * 2\n")
    load = conversion_report._repo_loader(str(tmp_path))
    assert load("zoo_pkg_c39.models.net").build() == 14


def test_unknown_checkout_names_the_known_zoos(tmp_path):
    with pytest.raises(SystemExit, match="none of the known zoos"):
        conversion_report.reference_report(str(tmp_path), None)


def test_every_zoo_row_names_a_registered_model():
    from dfkd_jax.models import ARCHITECTURES, GENERATORS

    def load(_):  # the rows are listed without importing anything but generator modules
        return type("M", (), {"LargeGenerator": object})

    for zoo in reference_zoos.ZOOS:
        for row in reference_zoos.rows(zoo, load, lambda _: "", None):
            assert row.arch is None or row.arch in ARCHITECTURES or row.arch in GENERATORS, (zoo, row)
            assert row.arch is not None or row.note, (zoo, row)
