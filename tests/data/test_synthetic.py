from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfdefakeq.data import synthetic as S
from tfdefakeq.core.errors import UserError


def _photo_of(path: Path) -> str:
    return path.name.split("__")[0]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_tree_layout_and_counts(synthetic_root, tiny_synthetic_config):
    info = S.dataset_info(synthetic_root)
    assert info["config_hash"] == tiny_synthetic_config.hash()
    assert S.SyntheticConfig.from_json(info["config"]) == tiny_synthetic_config
    assert set(info["counts"]) == set(S.SPLITS)
    for split in S.SPLITS:
        assert set(info["counts"][split]) == {"autoencoder", "upsampler"}
        for generator, counts in info["counts"][split].items():
            folder = synthetic_root / split / generator
            reals = sorted(p.name for p in (folder / "0_real").iterdir())
            fakes = sorted(p.name for p in (folder / "1_fake").iterdir())
            assert len(reals) == counts["0_real"] == len(fakes) == counts["1_fake"] > 0
            assert reals == fakes  # each fake is named after the real crop it was made from
    some = next((synthetic_root / "test" / "upsampler" / "1_fake").iterdir())
    with Image.open(some) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64))
    assert info["skipped_sources"] == [{"name": "camera_pywt", "reason": "duplicate of camera"}]
    assert not list(synthetic_root.parent.glob(".*tmp-*"))  # no temp folder left behind


def test_split_is_by_source_photo(synthetic_root):
    info = S.dataset_info(synthetic_root)
    photos_in = {s: {_photo_of(p) for p in (synthetic_root / s).rglob("*.png")} for s in S.SPLITS}
    assert not photos_in["train"] & photos_in["val"]
    assert not photos_in["train"] & photos_in["test"]
    assert not photos_in["val"] & photos_in["test"]
    for split in S.SPLITS:
        assert photos_in[split] == set(info["photos_per_split"][split])
    split_of = {s["name"]: s["split"] for s in info["sources"]}
    assert split_of["motorcycle_left"] == split_of["motorcycle_right"]  # one scene, one split


def test_reals_are_post_processed_crops_and_fakes_differ(synthetic_root):
    folder = synthetic_root / "train" / "upsampler"
    name = sorted(p.name for p in (folder / "0_real").iterdir())[0]
    real = np.asarray(Image.open(folder / "0_real" / name), dtype=int)
    fake = np.asarray(Image.open(folder / "1_fake" / name), dtype=int)
    assert 0 < np.abs(real - fake).mean() < 30  # same content, different pixels
    # reals are shared across generator folders: one post-processing draw per crop
    other = synthetic_root / "train" / "autoencoder" / "0_real" / name
    assert other.read_bytes() == (folder / "0_real" / name).read_bytes()


def test_same_seed_gives_identical_bytes(synthetic_root, tiny_synthetic_config, tmp_path, capfd):
    again = S.generate(tmp_path / "again", tiny_synthetic_config, progress=True)
    assert "\r" not in capfd.readouterr().err  # stderr is not a terminal here: no redrawn bars in a log
    assert _tree_bytes(again) == _tree_bytes(synthetic_root)


def test_existing_dataset_is_reused_not_rebuilt(synthetic_root, tiny_synthetic_config, monkeypatch):
    monkeypatch.setattr(S, "_build", lambda *a, **k: pytest.fail("rebuilt an existing dataset"))
    assert S.generate(synthetic_root, tiny_synthetic_config, progress=False) == synthetic_root


def test_default_root_is_named_by_config_hash(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDEFAKEQ_CACHE", str(tmp_path))
    config = S.SyntheticConfig()
    assert S.default_root(config) == tmp_path / f"synthetic-{config.hash()}"
    assert S.SyntheticConfig(seed=1).hash() != config.hash()
    assert S.SyntheticConfig(generators=["autoencoder", "upsampler"]).hash() == config.hash()  # lists == tuples
    monkeypatch.delenv("TFDEFAKEQ_CACHE")
    assert S.cache_dir() == Path.home() / ".cache" / "tfdefakeq"


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    config = S.SyntheticConfig(generators=("upsampler",), max_crops_per_photo=2)
    calls = []

    def interrupt(*args):
        calls.append(1)
        if len(calls) > 5:  # some files are already written by now
            raise KeyboardInterrupt
        return args[0]

    monkeypatch.setattr(S, "_post_fake", interrupt)
    with pytest.raises(KeyboardInterrupt):
        S.generate(tmp_path / "ds", config, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_folders_holding_something_else(synthetic_root, tmp_path):
    with pytest.raises(UserError, match="another config"):
        S.generate(synthetic_root, S.SyntheticConfig(seed=7, max_crops_per_photo=1), progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=f"{tmp_path}: exists, is not empty"):
        S.generate(tmp_path, S.SyntheticConfig(max_crops_per_photo=1), progress=False)


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(size=30), "size"),
        (dict(generators=("stylegan",)), "generators"),
        (dict(jpeg_quality=(90, 80)), "jpeg_quality"),
        (dict(photos=("lena",)), "photos"),
        (dict(split_fractions=(0.8, 0.2, 0.0)), "split_fractions"),
    ],
)
def test_bad_config_is_a_user_error(bad, field):
    with pytest.raises(UserError, match=f"^{field}:"):
        S.SyntheticConfig(**bad).validate()


def test_photos_are_found_in_installed_packages():
    photos, skipped = S.load_photos()
    names = {p.source.name for p in photos}
    assert len(photos) >= 15 and {"astronaut", "china", "grace_hopper", "ascent"} <= names
    for p in photos:
        assert p.image.dtype == np.uint8 and p.image.ndim == 3 and p.image.shape[2] == 3
    camera = next(p for p in photos if p.source.name == "camera").image
    assert np.array_equal(camera[..., 0], camera[..., 2])  # grayscale replicated
    assert {"name": "camera_pywt", "reason": "duplicate of camera"} in skipped


def test_crops_are_distinct_grid_cells_at_several_scales():
    photos, _ = S.load_photos(("astronaut", "retina"))
    config = S.SyntheticConfig()
    astronaut, retina = (S.cut_crops(p, config) for p in photos)
    assert len(astronaut) == 64 + 16 + 4  # 512 px at scales 1, 2, 4
    assert len({c.name for c in astronaut}) == len(astronaut)
    assert all(c.image.shape == (64, 64, 3) for c in astronaut)
    cell = next(c for c in astronaut if (c.scale, c.row, c.col) == (2, 1, 2))
    assert np.array_equal(cell.image, S.area_downscale(photos[0].image, 2)[64:128, 128:192])
    assert len(retina) < 484 + 121 + 25  # its black corners are dropped as flat
    capped = S.cut_crops(photos[0], replace(config, max_crops_per_photo=5))
    assert len(capped) == 5 and [c.name for c in capped] == [c.name for c in S.cut_crops(photos[0], replace(config, max_crops_per_photo=5))]


def test_default_split_has_several_hundred_test_crops():
    config = S.SyntheticConfig()
    photos, _ = S.load_photos()
    counts: dict[str, int] = {}
    for p in photos:
        counts[p.source.split_group] = counts.get(p.source.split_group, 0) + len(S.cut_crops(p, config))
    split = S.assign_splits(counts, config.split_fractions, config.seed)
    per_split = {s: sum(n for g, n in counts.items() if split[g] == s) for s in S.SPLITS}
    assert per_split["test"] >= 300 and per_split["val"] >= 100
    total = sum(per_split.values())
    assert abs(per_split["train"] / total - 0.7) < 0.05
    assert S.assign_splits(counts, config.split_fractions, config.seed) == split  # seeded
    assert S.assign_splits(counts, config.split_fractions, 1) != split


def test_cli_generates_and_reports(tmp_path, capsys):
    out = tmp_path / "ds"
    args = S.parse_args(["--out", str(out), "--generators", "upsampler", "--max-crops-per-photo", "2", "--quiet"])
    assert S.main(args) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "test: upsampler" in printed
    info = json.loads((out / "dataset.json").read_text())
    assert info["config"]["generators"] == ["upsampler"] and info["config"]["max_crops_per_photo"] == 2


def test_cli_user_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        S.cli(["--generators", "stylegan", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tfdefakeq synthetic: error: generators:") and err.count("\n") == 1
