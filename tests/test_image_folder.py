"""dfkd_jax.data.image_folder: the one-folder-per-class layout read as torchvision's ImageFolder reads it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dfkd_jax.data.image_folder import ImageFolderError, list_image_folder, load_image, read_image_folder
from dfkd_jax.errors import UserError
from tests.image_fixtures import WNIDS, write_image_folder


def test_classes_sorted_labels_and_pixels(tmp_path):
    written = write_image_folder(tmp_path, per_class=2, size=(24, 32), ext=".png")
    images, labels, names = read_image_folder(tmp_path, (24, 32, 3))
    assert names == tuple(sorted(WNIDS))
    assert images.dtype == np.uint8 and images.shape == (6, 24, 32, 3)
    assert labels.dtype == np.int32 and labels.tolist() == [0, 0, 1, 1, 2, 2]
    for i, (name, label) in enumerate(zip([n for n in names for _ in range(2)], labels)):
        np.testing.assert_array_equal(images[i], written[name][i % 2])  # PNG, no resize: exact


def test_resize_short_side_then_centre_crop(tmp_path):
    # a 30x20 (h x w) image: short side 20 -> 16 makes it 24x16, then the 16x16 crop takes rows 4..20
    a = np.arange(30 * 20 * 3, dtype=np.uint32).reshape(30, 20, 3) % 251
    (tmp_path / "c").mkdir()
    Image.fromarray(a.astype(np.uint8)).save(tmp_path / "c" / "x.png")
    resized = np.asarray(Image.fromarray(a.astype(np.uint8)).resize((16, 24), Image.BILINEAR))
    got = load_image(tmp_path / "c" / "x.png", (16, 16, 3), resize=16)
    np.testing.assert_array_equal(got, resized[4:20])
    # resize equal to the short side: no resampling, only the crop (offsets round((30 - 16) / 2) = 7, 2)
    got = load_image(tmp_path / "c" / "x.png", (16, 16, 3), resize=20)
    np.testing.assert_array_equal(got, a[7:23, 2:18].astype(np.uint8))
    # no resize given: the least resize that covers the crop (here 20 -> 16, as above)
    np.testing.assert_array_equal(load_image(tmp_path / "c" / "x.png", (16, 16, 3)), resized[4:20])
    # a crop larger than the image is zero-padded, as CenterCrop pads
    got = load_image(tmp_path / "c" / "x.png", (34, 20, 3), resize=20)
    assert got.shape == (34, 20, 3) and not got[:2].any() and not got[-2:].any()
    np.testing.assert_array_equal(got[2:32], a.astype(np.uint8))


def test_imagenet_evaluation_size(tmp_path):
    write_image_folder(tmp_path, per_class=1, size=(300, 375))  # JPEG, landscape
    images, labels, _ = read_image_folder(tmp_path, (224, 224, 3), resize=256)
    assert images.shape == (3, 224, 224, 3) and labels.tolist() == [0, 1, 2]


def test_channel_conversion(tmp_path):
    (tmp_path / "a").mkdir()
    gray = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "a" / "g.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "a" / "rgb.bmp")
    rgb, _, _ = read_image_folder(tmp_path, (8, 8, 3))
    np.testing.assert_array_equal(rgb[0], np.stack([gray] * 3, -1))  # grayscale -> RGB repeats
    one, _, _ = read_image_folder(tmp_path, (8, 8, 1))
    assert one.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(one[0, ..., 0], gray)
    np.testing.assert_array_equal(one[1, ..., 0], gray)  # RGB of equal channels -> L is the same gray


def test_nested_hidden_and_other_files(tmp_path):
    write_image_folder(tmp_path, classes=("b", "a"), per_class=1, size=(8, 8), ext=".png")
    (tmp_path / "a" / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "sub" / "y.PNG")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    paths, labels, names = list_image_folder(tmp_path)
    assert names == ("a", "b") and labels.tolist() == [0, 0, 1]
    assert [p.name for p in paths] == ["ILSVRC2012_val_00000000.png", "y.PNG", "ILSVRC2012_val_00000000.png"]


def test_given_classes(tmp_path):
    write_image_folder(tmp_path, classes=("dog",), per_class=1, size=(8, 8), ext=".png")
    (tmp_path / "cat").mkdir()  # an empty class is fine when the classes are given
    _, labels, names = read_image_folder(tmp_path, (8, 8, 3), classes=("ant", "cat", "dog"))
    assert names == ("ant", "cat", "dog") and labels.tolist() == [2]
    with pytest.raises(ImageFolderError, match="dog name no class"):
        read_image_folder(tmp_path, (8, 8, 3), classes=("ant", "cat"))


@pytest.mark.parametrize("case", ["missing", "no_classes", "no_images", "empty_class", "bad_file"])
def test_errors(tmp_path, case):
    root = tmp_path / "val"
    if case != "missing":
        root.mkdir()
    if case == "no_images":
        (root / "a").mkdir()
    if case in ("empty_class", "bad_file"):
        write_image_folder(root, classes=("a",), per_class=1, size=(8, 8), ext=".png")
        (root / "b").mkdir()
    if case == "bad_file":
        (root / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    match = {"missing": "does not exist", "no_classes": "no class sub-folders", "no_images": "holds no images",
             "empty_class": "b hold no images", "bad_file": "Cannot read image"}[case]
    with pytest.raises(ImageFolderError, match=match) as e:
        read_image_folder(root, (8, 8, 3))
    assert isinstance(e.value, UserError) and isinstance(e.value, FileNotFoundError)
    assert "\n" not in str(e.value)
