"""Whole-image scoring in predict: tiles, their aggregation, the heat map and the CSV column."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfdefakeq import predict
from tfdefakeq.runtime.inference import Predictor, aggregate_probs, tile_origins
from tfdefakeq.runtime.loader import load_model

MODEL = Path(__file__).resolve().parents[2] / "tflite_models" / "resnet18_64_int8.tflite"


def test_tile_origins_cover_the_image_to_its_edge():
    assert tile_origins(128, 64, 32) == [0, 32, 64]
    assert tile_origins(100, 64, 32) == [0, 32, 36]  # the last tile is flush with the edge
    assert tile_origins(64, 64, 32) == [0]


def test_aggregates():
    probs = [0.1, 0.9, 0.2, 0.8, 0.3]
    assert aggregate_probs(probs, "mean") == pytest.approx(0.46)
    assert aggregate_probs(probs, "max") == pytest.approx(0.9)
    assert aggregate_probs(probs, "topk", 3) == pytest.approx((0.9 + 0.8 + 0.3) / 3)
    assert aggregate_probs(probs[:2], "topk", 3) == pytest.approx(0.5)  # k capped at the tile count


@pytest.fixture(scope="module")
def mosaic(synthetic_root, tmp_path_factory):
    """A 128x128 photo of four 64 px crops: three real, one fake (the fake the model is surest of,
    the reals it is surest of), at the bottom-right; with stride 64 each tile is one crop."""
    from tfdefakeq.data.folders import scan_forensynths
    from tfdefakeq.runtime.images import load_images

    model, manifest = load_model(MODEL)
    samples = scan_forensynths(synthetic_root, "test")
    real = [s for s in samples if s.label == 0][:40]
    fake = [s for s in samples if s.label == 1][:40]
    real_img, fake_img = load_images([s.path for s in real], (64, 64)), load_images([s.path for s in fake], (64, 64))
    real_p = model.predict_proba(real_img, manifest.preprocess)
    fake_p = model.predict_proba(fake_img, manifest.preprocess)
    reals = real_img[np.argsort(real_p)[:3]]
    fake_crop = fake_img[int(np.argmax(fake_p))]
    photo = np.concatenate([np.concatenate([reals[0], reals[1]], 1), np.concatenate([reals[2], fake_crop], 1)], 0)
    path = tmp_path_factory.mktemp("mosaic") / "photo.png"
    Image.fromarray(photo).save(path)
    return path, photo, model, manifest


def test_one_fake_region_is_found_and_aggregated(mosaic):
    path, photo, model, manifest = mosaic
    predictor = Predictor(model, manifest, tiles=True, stride=64)
    probs, boxes = predictor.score_tiles(photo)
    assert boxes == [(0, 0, 64, 64), (0, 64, 64, 64), (64, 0, 64, 64), (64, 64, 64, 64)]
    assert int(np.argmax(probs)) == 3 and probs[3] > 0.5 and probs[:3].max() < 0.5  # only the fake tile
    for how in ("mean", "max", "topk"):
        row = Predictor(model, manifest, tiles=True, stride=64, aggregate=how, top_k=2).predict_image(path)
        expected = {"mean": probs.mean(), "max": probs.max(), "topk": np.sort(probs)[-2:].mean()}[how]
        assert row["prob"] == pytest.approx(expected, abs=1e-6) and row["tiles"] == 4
    center = Predictor(model, manifest).predict_image(path)  # the old path: one 64 px crop from the middle
    assert center["tiles"] == 1 and center["aggregate"] == "center crop"


def test_cli_writes_the_aggregation_and_a_heat_map(mosaic, tmp_path, capfd):
    path, photo, model, manifest = mosaic
    out, heat = tmp_path / "scores.csv", tmp_path / "heat"
    with pytest.raises(SystemExit) as info:
        predict.cli([str(MODEL), str(path), "--out", str(out), "--heatmap", str(heat)])
    assert info.value.code == 0
    text = "".join(line for line in out.read_text().splitlines(True) if not line.startswith("#"))
    (row,) = list(csv.DictReader(io.StringIO(text)))
    probs, _ = Predictor(model, manifest, tiles=True).score_tiles(photo)
    assert row["tiles"] == "9" and row["aggregate"] == "top3_mean of 9 tiles (stride 32)"  # default: stride 32, top-3 mean
    assert float(row["prob"]) == pytest.approx(np.sort(probs)[-3:].mean(), abs=1e-6)
    image = np.asarray(Image.open(heat / "photo.heatmap.png"))
    assert image.shape == photo.shape
    red = image[..., 0].astype(int) - image[..., 2].astype(int)
    assert red[64:, 64:].mean() > red[:64, :64].mean()  # the fake quadrant is the reddest
    with pytest.raises(SystemExit) as info:
        predict.cli([str(MODEL), str(path), "--center-crop", "--stride", "16"])
    assert info.value.code == 2 and "--stride" in capfd.readouterr().err
