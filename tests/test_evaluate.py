"""python -m tfdefakeq.evaluate end to end, with the shipped int8 ResNet-18 (64 px), on a tiny tree of
each supported layout: ForenSynths, UniversalFakeDetect, FF++ frames and a DeepfakeBench JSON."""

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.evaluate import main, parse_args

MODEL = Path(__file__).resolve().parents[1] / "tflite_models" / "resnet18_64_int8.tflite"


def _images(folder: Path, n: int, seed: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        names.append(f"{i}.png")
    return names


def _forensynths(root: Path) -> Path:
    for g, gen in enumerate(("gan_a", "gan_b")):
        for label, name in enumerate(("0_real", "1_fake")):
            _images(root / "test" / gen / name, 2, 10 * g + label)
    return root


def _universalfakedetect(root: Path) -> Path:
    for g, gen in enumerate(("dalle", "glide")):
        for label, name in enumerate(("real", "fake")):
            _images(root / "test" / gen / name, 2, 10 * g + label)
    return root


def _ffpp(root: Path) -> Path:
    for video, seed in (("000", 1), ("001", 2)):
        _images(root / "original_sequences/youtube/c23/frames" / video, 2, seed)
    for method, video, seed in (("Deepfakes", "000_003", 3), ("Deepfakes", "001_870", 4), ("Face2Face", "000_003", 5),
                                ("Face2Face", "001_870", 6)):
        _images(root / "manipulated_sequences" / method / "c23/frames" / video, 2, seed)
    return root


def _deepfakebench(root: Path) -> Path:
    labels = {}
    for label_name, videos in (("FF-real", ("000", "001")), ("FF-DF", ("000_003", "001_870")), ("FF-F2F", ("002_006",))):
        block = {}
        for v, video in enumerate(videos):
            frames = _images(root / "frames" / label_name / video, 2, zlib.crc32(f"{label_name}{v}".encode()) % 1000)
            block[video] = {"label": label_name, "frames": [f"frames/{label_name}/{video}/{f}" for f in frames]}
        labels[label_name] = {"test": {"c23": block}}
    path = root / "FaceForensics++.json"
    path.write_text(json.dumps({"FaceForensics++": labels}))
    return path


LAYOUTS = {  # builder, --split, {generator: (n_real, n_fake)}, n_videos per generator (None: stills)
    "forensynths": (_forensynths, "test", {"gan_a": (2, 2), "gan_b": (2, 2)}, None),
    "universalfakedetect": (_universalfakedetect, "test", {"dalle": (2, 2), "glide": (2, 2)}, None),
    "ffpp_frames": (_ffpp, None, {"Deepfakes": (4, 4), "Face2Face": (4, 4)}, {"Deepfakes": 4, "Face2Face": 4}),
    "deepfakebench_json": (_deepfakebench, None, {"FF-DF": (4, 4), "FF-F2F": (4, 2)}, {"FF-DF": 4, "FF-F2F": 3}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_evaluate_each_layout(layout, tmp_path, capsys):
    build, split, expected, videos = LAYOUTS[layout]
    data = build(tmp_path / "data")
    argv = [str(MODEL), "--data", str(data), "--out", str(tmp_path / "out")] + (["--split", split] if split else [])
    assert main(parse_args(argv)) == 0
    # one table, named for the split read (a DeepfakeBench JSON's own "test" split by default)
    (table,) = (tmp_path / "out").glob(f"{MODEL.stem}*.eval.csv")
    assert table.name == MODEL.stem + {"deepfakebench_json": ".test"}.get(layout, f".{split}" if split else "") + ".eval.csv"
    with open(table) as f:
        rows = {r["generator"]: r for r in csv.DictReader(line for line in f if not line.startswith("#"))}
    assert set(rows) == set(expected) | {"mean"}
    for generator, (n_real, n_fake) in expected.items():
        row = rows[generator]
        assert (int(row["n_real"]), int(row["n_fake"])) == (n_real, n_fake)
        assert 0.0 <= float(row["ap"]) <= 1.0 and 0.0 <= float(row["auc"]) <= 1.0
        if videos:
            assert int(row["n_videos"]) == videos[generator] and 0.0 <= float(row["video_auc"]) <= 1.0
        else:
            assert "n_videos" not in row
    assert int(rows["mean"]["n"]) == sum(a + b for a, b in expected.values())
    assert "generator" in capsys.readouterr().out


def test_curves_need_out(tmp_path):
    data = _forensynths(tmp_path / "data")
    with pytest.raises(UserError, match="--curves draws into --out"):
        main(parse_args([str(MODEL), "--data", str(data), "--split", "test", "--curves"]))


def test_curves_png_is_not_overwritten_without_overwrite(tmp_path):
    pytest.importorskip("matplotlib")
    data = _forensynths(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    png = out / f"{MODEL.stem}.test.curves.png"
    png.write_bytes(b"an earlier plot")
    argv = [str(MODEL), "--data", str(data), "--split", "test", "--out", str(out), "--curves"]
    with pytest.raises(UserError, match=r"curves\.png: already exists"):
        main(parse_args(argv))
    assert png.read_bytes() == b"an earlier plot"
    assert not list(out.glob("*.csv"))  # refused before anything was written
    assert main(parse_args(argv + ["--overwrite"])) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def _header(table: Path) -> dict:
    return dict(line[2:].rstrip("\n").split(": ", 1) for line in table.read_text().splitlines(True) if line.startswith("# "))


def test_the_threshold_comes_from_the_manifest_unless_given(tmp_path, capsys):
    """Issue 14: the manifest's calibrated threshold by default, --threshold over it, 0.5 (said once) for a
    manifest without one; the report's header says which was used, and the calls follow it."""
    from tfdefakeq.core.manifest import Manifest, manifest_path

    data = _forensynths(tmp_path / "data")
    model = tmp_path / "m.tflite"
    model.write_bytes(MODEL.read_bytes())  # same bytes: the manifest's sha256 still holds
    manifest = Manifest.load(manifest_path(MODEL))
    manifest.threshold = {}
    manifest.save(manifest_path(model))

    def run(name, *extra):
        out = tmp_path / name
        assert main(parse_args([str(model), "--data", str(data), "--split", "test", "--out", str(out), *extra])) == 0
        table = out / "m.test.eval.csv"
        with open(table) as f:
            mean = [r for r in csv.DictReader(line for line in f if not line.startswith("#")) if r["generator"] == "mean"][0]
        scores = [(int(r["label"]), float(r["prob"])) for r in csv.DictReader(open(out / "m.test.scores.csv"))]
        return _header(table), float(mean["real_acc"]), scores, capsys.readouterr().err

    header, _, scores, err = run("old")
    assert (header["threshold"], header["threshold_source"]) == ("0.5", "default: the manifest records no calibrated threshold")
    assert err.count("the manifest records no calibrated threshold; using 0.5") == 1
    # a calibrated manifest: its value, and every real image scored above it is called fake
    real_probs = sorted(p for label, p in scores if label == 0)
    middle = (real_probs[0] + real_probs[-1]) / 2
    manifest.threshold = {"value": middle, "method": "float_real_fpr", "target_real_fpr": 0.5, "real_fpr": 0.5,
                          "reference_threshold": 0.5, "split": "val", "n_real": 2, "n_fake": 2}
    manifest.save(manifest_path(model), overwrite=True)
    header, real_acc, _, err = run("calibrated")
    assert float(header["threshold"]) == middle and header["threshold_source"].startswith(
        "manifest: matches the float model's real-image false-positive rate 0.5000 at 0.5 on val")
    assert real_acc == pytest.approx(np.mean([p <= middle for p in real_probs]))
    assert "no calibrated threshold" not in err
    header, real_acc, _, _ = run("flag", "--threshold", "0.999999")
    assert (float(header["threshold"]), header["threshold_source"]) == (0.999999, "flag: --threshold")
    assert real_acc == 1.0
    with pytest.raises(UserError, match=r"--threshold must be a probability between 0 and 1 \(exclusive\), got 1.0"):
        main(parse_args([str(model), "--data", str(data), "--split", "test", "--threshold", "1"]))
