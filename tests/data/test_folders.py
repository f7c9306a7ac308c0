from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfdefakeq.data.folders import generators_of, scan_forensynths
from tfdefakeq.core.errors import UserError


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


# ---- the other layouts users arrive with ------------------------------------------------------------

from tfdefakeq.data.folders import (  # noqa: E402
    group_by_video,
    per_method_sets,
    scan_dataset,
    scan_deepfakebench_json,
    scan_ffpp_frames,
    scan_real_fake_pairs,
)


def test_universalfakedetect_pairs_found_by_folder_names(tmp_path):
    root = _tree(tmp_path, {"guided/real": 2, "guided/fake": 3, "ldm_200/0_real": 1, "ldm_200/1_fake": 1})
    samples = scan_real_fake_pairs(root)
    assert generators_of(samples) == ["guided", "ldm_200"]
    assert sum(s.label for s in samples if s.generator == "guided") == 3
    assert scan_dataset(root) == samples


def test_universalfakedetect_explicit_pairs_share_reals(tmp_path):
    root = _tree(tmp_path, {"laion": 2, "guided": 3, "glide_100_10": 4})
    samples = scan_real_fake_pairs(root, {"guided": ("laion", "guided"), "glide": ("laion", str(root / "glide_100_10"))})
    counts = {(s.generator, s.label) for s in samples}
    assert counts == {("guided", 0), ("guided", 1), ("glide", 0), ("glide", 1)}
    assert len([s for s in samples if s.generator == "glide" and s.label == 0]) == 2


def test_pair_with_missing_half_is_named(tmp_path):
    root = _tree(tmp_path, {"guided/real": 2, "dalle/fake": 2})
    with pytest.raises(UserError, match=r"dalle: has no real folder"):
        scan_real_fake_pairs(root)


def _ffpp(root: Path) -> Path:
    return _tree(root, {
        "original_sequences/youtube/c23/frames/000": 3, "original_sequences/youtube/c23/frames/001": 2,
        "manipulated_sequences/Deepfakes/c23/frames/000_003": 3,
        "manipulated_sequences/Face2Face/c23/frames/001_870": 2,
        "manipulated_sequences/Face2Face/c40/frames/001_870": 2,
    })


def test_ffpp_frames_group_by_video_and_method(tmp_path):
    samples = scan_ffpp_frames(_ffpp(tmp_path))
    assert generators_of(samples) == ["Deepfakes", "Face2Face", "youtube"]
    videos = group_by_video(samples)
    assert len(videos["youtube/000"]) == 3 and len(videos["Deepfakes/000_003"]) == 3
    sets = per_method_sets(samples)
    assert generators_of(sets) == ["Deepfakes", "Face2Face"]
    assert {s.label for s in sets if s.generator == "Face2Face"} == {0, 1}
    only = scan_ffpp_frames(tmp_path, videos={"000"}, methods=["Deepfakes"])
    assert {s.video for s in only} == {"youtube/000", "Deepfakes/000_003"}
    assert generators_of(scan_dataset(tmp_path)) == ["Deepfakes", "Face2Face"]


def test_ffpp_unknown_method_is_named(tmp_path):
    with pytest.raises(UserError, match="NeuralTextures"):
        scan_ffpp_frames(_ffpp(tmp_path), methods=["NeuralTextures"])


def test_deepfakebench_json(tmp_path):
    import json

    _tree(tmp_path, {"frames/real/a": 2, "frames/fake/b": 2})
    frames = lambda d: [f"frames/{d}/{i}.png" for i in range(2)]  # noqa: E731
    spec = {"FaceForensics++": {
        "FF-real": {"test": {"c23": {"a": {"label": "FF-real", "frames": frames("real/a")}}}},
        "FF-DF": {"test": {"c23": {"b": {"label": "FF-DF", "frames": frames("fake/b")}}},
                  "train": {"c23": {"b": {"label": "FF-DF", "frames": frames("fake/b")}}}},
    }}
    path = tmp_path / "FaceForensics++.json"
    path.write_text(json.dumps(spec))
    samples = scan_deepfakebench_json(path)
    assert [(s.generator, s.label, s.video) for s in samples[::2]] == [("real", 0, "FF-real/a"), ("FF-DF", 1, "FF-DF/b")]
    assert all(s.path.is_file() for s in samples)
    # evaluated, every fake set is paired with the shared reals (as FF++ frames are): one balanced set per method
    sets = scan_dataset(path)
    assert generators_of(sets) == ["FF-DF"]
    assert sorted((s.label, s.video) for s in sets) == [(0, "FF-real/a")] * 2 + [(1, "FF-DF/b")] * 2
    with pytest.raises(UserError, match="no frames for split 'val'"):
        scan_deepfakebench_json(path, split="val")
    only_reals = tmp_path / "reals.json"
    only_reals.write_text(json.dumps({"FaceForensics++": {"FF-real": spec["FaceForensics++"]["FF-real"]}}))
    with pytest.raises(UserError, match=r"reals\.json: no fake images"):
        scan_dataset(only_reals)


def test_group_by_video_takes_samples_or_ids(tmp_path):
    samples = scan_ffpp_frames(_ffpp(tmp_path))
    assert group_by_video(samples) == group_by_video([s.video for s in samples])
    assert group_by_video(["v1", None, "v2", "v1"]) == {"v1": [0, 3], "v2": [2]}


def test_a_root_with_splits_is_never_read_as_generators(tmp_path):
    from tfdefakeq.data.folders import choose_split

    root = _tree(tmp_path / "d", {"train/progan/0_real": 1, "train/progan/1_fake": 1,
                                  "val/progan/0_real": 1, "val/progan/1_fake": 1})
    with pytest.raises(UserError, match=r"holds the splits train, val, which would be read as generators"):
        scan_forensynths(root)
    assert choose_split(root, None, "val") == "val"
    assert choose_split(root, "train", "test") == "train"  # an explicit split is taken as given
    with pytest.raises(UserError, match=r"d: holds the splits train, val but no test/: pass --split"):
        choose_split(root, None, "test")
    assert choose_split(root / "val", None, "test") is None  # a root at one split is read as it is
