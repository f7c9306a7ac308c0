from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfdefakeq.data.folders import generators_of, scan_forensynths
from tfdefakeq.errors import UserError


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def _tree(root: Path, layout: dict[str, int]) -> Path:
    """Writes `count` PNGs into each relative folder of `layout`; a count of 0 makes an empty folder."""
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _image(root / folder / f"{i}.png")
    return root


def test_generators_labels_and_splits(tmp_path):
    root = _tree(tmp_path, {
        "train/progan/0_real": 2, "train/progan/1_fake": 3,
        "test/stylegan/0_real": 1, "test/stylegan/1_fake": 1,
        "test/biggan/0_real": 2, "test/biggan/1_fake": 2,
    })
    (root / "test/biggan/1_fake/notes.txt").write_text("not an image")
    test = scan_forensynths(root, "test")
    assert generators_of(test) == ["biggan", "stylegan"]
    assert [(s.generator, s.label) for s in test if s.generator == "biggan"] == [("biggan", 0)] * 2 + [("biggan", 1)] * 2
    assert all(s.path.suffix == ".png" for s in test)
    train = scan_forensynths(root, "train")
    assert len(train) == 5 and {s.label for s in train} == {0, 1}
    assert len(scan_forensynths(root / "test")) == len(test)  # root may point straight at a split


def test_nested_class_folders_belong_to_their_generator(tmp_path):
    root = _tree(tmp_path, {
        "train/progan/car/0_real": 2, "train/progan/car/1_fake": 2,
        "train/progan/cat/0_real": 1, "train/progan/cat/1_fake": 1,
    })
    samples = scan_forensynths(root, "train")
    assert generators_of(samples) == ["progan"]
    assert len(samples) == 6
    assert {s.path.parent.parent.name for s in samples} == {"car", "cat"}


def test_root_at_one_generator_folder(tmp_path):
    root = _tree(tmp_path / "wild", {"0_real": 1, "1_fake": 2, "1_fake/sub": 1})
    samples = scan_forensynths(root)
    assert generators_of(samples) == ["wild"]
    assert sum(s.label for s in samples) == 3  # images in sub-folders of a label folder count


def test_missing_split_or_root(tmp_path):
    _tree(tmp_path, {"train/g/0_real": 1, "train/g/1_fake": 1})
    with pytest.raises(UserError, match=f"^{tmp_path / 'val'}: dataset folder not found"):
        scan_forensynths(tmp_path, "val")
    with pytest.raises(UserError, match="no 0_real/1_fake folders found"):
        scan_forensynths(_tree(tmp_path / "flat", {"real": 1, "fake": 1}))


def test_empty_class_folder_is_named(tmp_path):
    _tree(tmp_path, {"g/0_real": 2, "g/1_fake": 0})
    with pytest.raises(UserError, match=f"^{tmp_path / 'g' / '1_fake'}: class folder holds no images"):
        scan_forensynths(tmp_path)


def test_missing_0_real_is_named(tmp_path):
    _tree(tmp_path, {"a/0_real": 1, "a/1_fake": 1, "b/1_fake": 2})
    with pytest.raises(UserError, match=f"^{tmp_path / 'b' / '0_real'}: missing class folder"):
        scan_forensynths(tmp_path)


def test_mislabeled_folder_is_named(tmp_path):
    _tree(tmp_path, {"g/0_real": 1, "g/1_fake": 1, "g/1_fakes": 1})
    with pytest.raises(UserError, match=f"^{tmp_path / 'g' / '1_fakes'}: folder name is not a label"):
        scan_forensynths(tmp_path)
