"""python -m tfdefakeq.predict on an image, a folder and a video; BlazeFace face crops."""

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import random_images
from tfdefakeq import predict
from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.faces import (
    Face,
    FaceDetector,
    crop_face,
    decode_boxes,
    face_crop_box,
    find_face_model,
    ssd_anchors,
)
from tfdefakeq.runtime.images import center_crop
from tfdefakeq.runtime.loader import load_model
from tfdefakeq.runtime.video import read_frames, sample_indices

MODEL = Path(__file__).resolve().parents[1] / "tflite_models" / "resnet18_64_int8.tflite"


def run_cli(argv, capfd):
    with pytest.raises(SystemExit) as info:
        predict.cli([str(a) for a in argv])
    out, err = capfd.readouterr()
    return info.value.code, out, err


def read_rows(path):
    return list(csv.DictReader(io.StringIO("".join(l for l in path.read_text().splitlines(True) if not l.startswith("#")))))


@pytest.fixture(scope="module")
def detector_model():
    return load_model(MODEL)


@pytest.fixture
def images(tmp_path):
    """Three 80x72 PNG images (larger than the 64 px input, so the center crop is exercised)."""
    arrays, _ = random_images(3, 80, seed=5)
    paths = []
    for i, arr in enumerate(arrays):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr[:72]).save(path)
        paths.append(path)
    return paths


def expected_prob(model_manifest, path):
    model, manifest = model_manifest
    arr = np.asarray(Image.open(path).convert("RGB"))
    return float(model.predict_proba(center_crop(arr, model.image_size)[None], manifest.preprocess)[0])


def test_one_image(images, tmp_path, capfd, detector_model):
    out = tmp_path / "scores.csv"
    code, stdout, _ = run_cli([MODEL, images[0], "--out", out, "--center-crop"], capfd)
    assert code == 0 and f"wrote {out}" in stdout
    (row,) = read_rows(out)
    assert row["path"] == str(images[0]) and row["kind"] == "image" and row["frames"] == "1"
    assert float(row["prob"]) == pytest.approx(expected_prob(detector_model, images[0]), abs=1e-6)
    threshold = detector_model[1].threshold.get("value", 0.5)  # the manifest's calibrated threshold, else 0.5
    assert row["decision"] == ("fake" if float(row["prob"]) > threshold else "real")
    code, _, err = run_cli([MODEL, images[0], "--out", out], capfd)
    assert code == 2 and "already exists" in err
    code, _, _ = run_cli([MODEL, images[0], "--out", out, "--overwrite", "--threshold", "1e-9"], capfd)
    assert code == 0 and read_rows(out)[0]["decision"] == "fake"


def test_the_threshold_comes_from_the_manifest_unless_given(images, tmp_path, capfd):
    """Issue 14: predict calls an item fake above the manifest's calibrated threshold, above --threshold
    when given, and above 0.5 (said once on stderr) when the manifest records none; the CSV says which."""
    import json

    from tfdefakeq.core.manifest import manifest_path

    model = tmp_path / "m.tflite"
    model.write_bytes(MODEL.read_bytes())  # same bytes: the manifest's sha256 still holds
    manifest = json.loads(manifest_path(MODEL).read_text())
    manifest.pop("threshold", None)
    manifest_path(model).write_text(json.dumps(manifest))
    out = tmp_path / "scores.csv"
    code, stdout, err = run_cli([model, images[0], "--out", out, "--center-crop"], capfd)
    assert code == 0 and err.count("the manifest records no calibrated threshold; using 0.5") == 1
    assert "(threshold 0.5, default: the manifest records no calibrated threshold)" in stdout
    prob = float(read_rows(out)[0]["prob"])
    assert "# threshold: 0.5\n" in out.read_text()
    for value, decision in ((prob - 1e-4, "fake"), (prob, "real")):  # fake when prob > threshold
        manifest["threshold"] = {"value": value, "method": "float_real_fpr", "target_real_fpr": 0.2, "real_fpr": 0.2,
                                 "reference_threshold": 0.5, "split": "val", "n_real": 10, "n_fake": 10}
        manifest_path(model).write_text(json.dumps(manifest))
        code, stdout, err = run_cli([model, images[0], "--out", out, "--overwrite", "--center-crop"], capfd)
        assert code == 0 and err == "" and read_rows(out)[0]["decision"] == decision
        assert f"# threshold: {value!r}\n# threshold_source: manifest: matches the float model's" in out.read_text()
    code, _, _ = run_cli([model, images[0], "--out", out, "--overwrite", "--center-crop", "--threshold", "0.999"], capfd)
    assert code == 0 and read_rows(out)[0]["decision"] == "real"
    assert "# threshold_source: flag: --threshold\n" in out.read_text()


def test_folder_recursive_with_a_broken_file(images, tmp_path, capfd, detector_model):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    images[1].rename(nested / "deep.png")
    (tmp_path / "a" / "broken.jpg").write_text("not a jpeg")
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(np.zeros((70, 70, 3), np.uint8)).save(tmp_path / ".hidden" / "skip.png")
    (tmp_path / "notes.txt").write_text("ignored")
    out = tmp_path / "out" / "scores.csv"
    code, stdout, err = run_cli([MODEL, tmp_path, "--out", out, "--center-crop"], capfd)
    assert code == 0
    rows = read_rows(out)
    assert [Path(r["path"]).name for r in rows] == ["deep.png", "broken.jpg", "img0.png", "img2.png"]
    broken = rows[1]
    assert broken["decision"] == "error" and "not a readable image" in broken["error"]
    assert "warning" in err and "broken.jpg" in err
    deep = rows[0]
    assert float(deep["prob"]) == pytest.approx(expected_prob(detector_model, nested / "deep.png"), abs=1e-6)
    assert "1 error" in stdout



def test_a_folder_where_every_input_fails_is_an_error(tmp_path, capfd):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "scores.csv"
    code, stdout, err = run_cli([MODEL, tmp_path / "in", "--out", out], capfd)
    assert code == 2 and not out.exists() and stdout == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("tfdefakeq predict: error:") and "no input could be scored (1 failed" in last
    assert "broken.jpg" in last


@pytest.mark.parametrize("threshold", ["2", "-0.1", "nan", "0", "1"])
def test_threshold_outside_0_1_is_an_error(images, capfd, threshold):
    code, stdout, err = run_cli([MODEL, images[0], "--threshold", threshold], capfd)
    assert code == 2 and stdout == ""
    assert err.strip() == ("tfdefakeq predict: error: --threshold must be a probability between 0 and 1 (exclusive), "
                           f"got {float(threshold)}")

def test_bad_paths_are_user_errors(tmp_path, capfd):
    code, _, err = run_cli([MODEL, tmp_path / "missing.png"], capfd)
    assert code == 2 and "missing.png: no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli([MODEL, tmp_path / "empty"], capfd)
    assert code == 2 and "no images or videos" in err
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(small)
    code, _, err = run_cli([MODEL, small], capfd)
    assert code == 2 and "smaller than the model input" in err and err.count("\n") == 1


def test_video_mean_and_max_over_sampled_frames(tmp_path, capfd, detector_model):
    pytest.importorskip("av")
    from tfdefakeq.runtime.video import write_video

    frames, _ = random_images(12, 80, seed=9)
    video = write_video(tmp_path / "clip.mp4", frames[:, :72], fps=10)
    out = tmp_path / "v.csv"
    code, stdout, _ = run_cli([MODEL, video, "--frames", "4", "--per-frame", "--out", out], capfd)
    assert code == 0
    rows = read_rows(out)
    assert [r["kind"] for r in rows] == ["frame"] * 4 + ["video"]
    assert [r["path"].split("#frame=")[1] for r in rows[:4]] == ["0", "4", "7", "11"]
    probs = [float(r["prob"]) for r in rows[:4]]
    summary = rows[-1]
    assert summary["frames"] == "4"
    assert float(summary["prob"]) == pytest.approx(np.mean(probs), abs=1e-6)
    assert float(summary["prob_max"]) == pytest.approx(max(probs), abs=1e-6)
    # the frames the model saw are the decoded frames (lossy codec), center-cropped
    model, manifest = detector_model
    index, frame = next(read_frames(video, count=1))
    assert index == 0
    assert probs[0] == pytest.approx(float(model.predict_proba(center_crop(frame, (64, 64))[None], manifest.preprocess)[0]), abs=1e-6)
    code, stdout, _ = run_cli([MODEL, video, "--every", "5"], capfd)
    assert code == 0 and "      3  video" in stdout


def test_frame_sampling():
    assert sample_indices(100, count=5) == [0, 25, 50, 74, 99]
    assert sample_indices(3, count=16) == [0, 1, 2]
    assert sample_indices(10, every=4) == [0, 4, 8]
    with pytest.raises(UserError, match="--every must be >= 1"):
        sample_indices(10, every=0)


def test_video_without_pyav_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(UserError, match=r"pip install 'tfdefakeq\[video\]'"):
        next(read_frames(tmp_path / "x.mp4"))


# ---- faces ----------------------------------------------------------------------------------


def test_ssd_anchor_layout():
    short = ssd_anchors(128, (8, 16, 16, 16), 2)
    assert short.shape == (896, 2)
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])  # 2 anchors per cell on the stride-8 grid
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])  # then 6 per cell on the stride-16 grid
    np.testing.assert_allclose(short[518], [1.5 / 8, 0.5 / 8])
    assert ssd_anchors(192, (4,), 1).shape == (2304, 2)


def test_box_decoding():
    anchors = np.array([[0.5, 0.25]], np.float32)
    raw = np.zeros((1, 16), np.float32)
    raw[0, :4] = [12.8, -12.8, 32, 64]  # shift (+0.1, -0.1), size (0.25, 0.5) of a 128 px input
    raw[0, 4:6] = [6.4, 0]
    boxes, keypoints = decode_boxes(raw, anchors, 128)
    np.testing.assert_allclose(boxes[0], [0.475, -0.1, 0.725, 0.4], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [0.55, 0.25], atol=1e-6)


def test_crop_geometry_on_a_synthetic_detection():
    # a 40x60 face at (100, 50): side 60 * 1.3 = 78 around its centre (120, 80)
    assert face_crop_box((100, 50, 140, 110), (300, 400), margin=0.3) == (81, 41, 159, 119)
    # near the top-left corner the square is shifted inside the image, not shrunk
    assert face_crop_box((0, 0, 20, 20), (300, 400), margin=0.5) == (0, 0, 30, 30)
    # larger than the image: clipped to the short side
    assert face_crop_box((0, 0, 500, 500), (300, 400), margin=0.3) == (100, 0, 400, 300)
    image = np.zeros((300, 400, 3), np.uint8)
    image[41:119, 81:159] = 200  # the crop region is bright, the rest black
    crop = crop_face(image, Face((100, 50, 140, 110), 0.9, np.zeros((6, 2))), (64, 64), margin=0.3)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert crop[2:-2, 2:-2].min() == 200


@pytest.fixture(scope="module")
def face_detector():
    try:
        find_face_model("short")
    except UserError as e:
        pytest.skip(str(e))
    return FaceDetector(kind="short")


def test_blazeface_loads_and_finds_no_face_in_noise(face_detector):
    assert face_detector.input_size == 128 and len(face_detector.anchors) == 896
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3)).astype(np.uint8)
    assert face_detector.detect(noise) == []
    assert face_detector.largest(np.zeros((100, 100, 3), np.uint8)) is None


def test_blazeface_finds_the_astronauts_face(face_detector):
    data = pytest.importorskip("skimage.data")
    image = data.astronaut()  # 512x512, Eileen Collins' face at about x 175-275, y 75-175
    face = face_detector.largest(image)
    assert face is not None and face.score > 0.8
    x0, y0, x1, y1 = face.box
    assert 150 < x0 < 200 and 250 < x1 < 300 and 50 < y0 < 110 and 150 < y1 < 200
    left_eye, right_eye = face.keypoints[0], face.keypoints[1]
    assert x0 < left_eye[0] < right_eye[0] < x1  # keypoints inside the box, in image pixels


def test_cli_face_crop(tmp_path, capfd, face_detector):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3)).astype(np.uint8)).save(noise)
    out = tmp_path / "faces.csv"
    code, stdout, _ = run_cli([MODEL, noise, "--face-crop", "--out", out], capfd)
    assert code == 0 and read_rows(out)[0]["decision"] == "no_face"
    data = pytest.importorskip("skimage.data")
    face_png = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(face_png)
    code, _, _ = run_cli([MODEL, face_png, "--face-crop", "--out", out, "--overwrite"], capfd)
    (row,) = read_rows(out)
    assert code == 0 and row["decision"] in ("real", "fake") and float(row["face_score"]) > 0.8
    assert len(row["face_box"].split()) == 4
