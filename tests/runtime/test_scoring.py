import csv
import io
import re

import numpy as np
import pytest

from tfdefakeq import evaluate as evaluate_cli
from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.scoring import (
    ROW_COLUMNS,
    Progress,
    evaluate_arrays,
    evaluate_model,
    format_table,
    output_paths,
)
from tfdefakeq.runtime.metrics import detection_metrics

GENERATORS = ("gan_a", "gan_b")  # as built by conftest.forensynths_root
PER_CLASS = 5


@pytest.fixture(scope="module")
def int8_results(tiny_models, forensynths_root):
    calls = []
    rows, scores = evaluate_model(
        tiny_models["int8"], forensynths_root, split="test", batch_callback=lambda d, t: calls.append((d, t))
    )
    return rows, scores, calls


def test_rows_per_generator_and_mean(int8_results):
    rows, scores, calls = int8_results
    assert [r["generator"] for r in rows] == [*GENERATORS, "mean"]
    assert all(list(r) == ROW_COLUMNS for r in rows)
    assert [r["n"] for r in rows] == [2 * PER_CLASS, 2 * PER_CLASS, 4 * PER_CLASS]
    assert len(scores) == 4 * PER_CLASS
    assert calls[-1] == (4 * PER_CLASS, 4 * PER_CLASS)


def test_numbers_equal_metrics_computed_directly(int8_results):
    rows, scores, _ = int8_results
    for row in rows[:-1]:
        mine = [s for s in scores if s["generator"] == row["generator"]]
        direct = detection_metrics([s["label"] for s in mine], [s["prob"] for s in mine])
        assert {k: row[k] for k in direct} == pytest.approx(direct)
    for key in ("ap", "auc", "acc", "real_acc", "fake_acc", "eer"):
        assert rows[-1][key] == pytest.approx(np.mean([r[key] for r in rows[:-1]]))


def test_scores_match_a_direct_prediction(int8_results, tiny_models):
    from tfdefakeq.runtime.images import load_images
    from tfdefakeq.runtime.loader import load_model

    _, scores, _ = int8_results
    model, manifest = load_model(tiny_models["int8"])
    probs = model.predict_proba(load_images([s["path"] for s in scores[:4]], (16, 16)), manifest.preprocess)
    np.testing.assert_allclose([s["prob"] for s in scores[:4]], probs)
    assert set(scores[0]) == {"path", "generator", "label", "prob"}


def test_detector_is_better_than_chance(int8_results):
    rows, _, _ = int8_results
    assert rows[-1]["auc"] > 0.8


def test_evaluate_arrays_for_keras_scores():
    labels = [0, 1, 0, 1, 0, 0, 1, 1]
    probs = [0.1, 0.9, 0.6, 0.4, 0.2, 0.3, 0.8, 0.7]
    gens = ["b", "b", "b", "b", "a", "a", "a", "a"]
    rows = evaluate_arrays(labels, probs, gens)
    assert [r["generator"] for r in rows] == ["a", "b", "mean"]
    assert rows[0]["auc"] == 1.0 and rows[1]["auc"] == 0.75
    assert rows[2]["auc"] == pytest.approx(0.875)
    assert (rows[2]["n"], rows[2]["n_real"], rows[2]["n_fake"]) == (8, 4, 4)


def test_evaluate_arrays_single_class_generator_names_it():
    with pytest.raises(UserError, match="generator only_real: only real images"):
        evaluate_arrays([0, 1, 0, 0], [0.1, 0.9, 0.2, 0.3], ["g", "g", "only_real", "only_real"])


def test_format_table_is_aligned():
    rows = evaluate_arrays([0, 1, 0, 1], [0.1, 0.9, 0.3, 0.2], ["long_generator_name", "long_generator_name", "g", "g"])
    lines = format_table(rows).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[0].startswith("| generator ") and "ap" in lines[0]
    assert lines[1].endswith(":|")  # numbers right-aligned
    assert "| mean " in lines[-1]


def test_progress_without_tqdm(monkeypatch):
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", None)
    stream = Terminal()
    progress = Progress("evaluate m", stream=stream)
    progress(5, 10)
    progress(10, 10)
    progress.close()
    assert stream.getvalue() == "\revaluate m: 5/10 images\revaluate m: 10/10 images\n"


# ---- the CLI ---------------------------------------------------------------------------------


def run_cli(argv, capfd):
    with pytest.raises(SystemExit) as info:
        evaluate_cli.cli([str(a) for a in argv])
    out, err = capfd.readouterr()
    return info.value.code, out, err


def test_cli_writes_csv_markdown_and_scores(tiny_models, forensynths_root, tmp_path, capfd):
    model = tiny_models["float32"]
    code, out, _ = run_cli([model, "--data", forensynths_root, "--split", "test", "--out", tmp_path], capfd)
    assert code == 0
    paths = output_paths(tmp_path, "tiny_float32.test")
    assert all(p.exists() for p in paths.values())
    assert "| gan_a " in out and "| mean " in out and f"wrote {paths['csv']}" in out

    text = paths["csv"].read_text()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    keys = {c[2:].split(":")[0] for c in comments}
    assert {"model", "data", "machine", "runtime", "command"} <= keys
    assert "python -m tfdefakeq.evaluate " in text and "--split test" in text
    table = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    assert [r["generator"] for r in table] == [*GENERATORS, "mean"]
    assert list(table[0]) == ROW_COLUMNS

    rows, scores = evaluate_model(model, forensynths_root, split="test")
    assert float(table[0]["ap"]) == rows[0]["ap"]  # full precision in the CSV
    md = paths["md"].read_text()
    assert md.startswith("# Evaluation of tiny_float32.test") and format_table(rows) in md
    written_scores = list(csv.DictReader(io.StringIO(paths["scores"].read_text())))
    assert list(written_scores[0]) == ["path", "generator", "label", "prob"]
    assert [float(s["prob"]) for s in written_scores] == pytest.approx([s["prob"] for s in scores])


def test_cli_refuses_to_overwrite(tiny_models, forensynths_root, tmp_path, capfd):
    argv = [tiny_models["int8"], "--data", forensynths_root / "test", "--out", tmp_path]
    assert run_cli(argv, capfd)[0] == 0
    before = (tmp_path / "tiny_int8.eval.csv").read_bytes()
    code, _, err = run_cli(argv, capfd)
    assert code == 2
    assert err.strip().splitlines() == [
        f"tfdefakeq evaluate: error: {tmp_path / 'tiny_int8.eval.csv'}: already exists (pass --overwrite to replace it)"
    ]
    assert (tmp_path / "tiny_int8.eval.csv").read_bytes() == before
    assert run_cli(argv + ["--overwrite"], capfd)[0] == 0


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "missing"])
def test_cli_bad_model_file_exits_2_with_one_line(kind, tiny_models, forensynths_root, tmp_path, capfd):
    path = tmp_path / f"{kind}.tflite"
    if kind == "text":
        path.write_text("not a model\n" * 10)
    elif kind == "truncated":
        path.write_bytes(tiny_models["int8"].read_bytes()[:1000])
    elif kind == "empty":
        path.write_bytes(b"")
    code, out, err = run_cli([path, "--data", forensynths_root], capfd)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tfdefakeq evaluate: error: {path}: ")


def test_cli_missing_data_folder(tiny_models, tmp_path, capfd):
    code, _, err = run_cli([tiny_models["int8"], "--data", tmp_path / "nowhere"], capfd)
    assert code == 2 and "nowhere: dataset folder not found" in err


def test_video_level_auc_averages_frames_per_video():
    from tfdefakeq.runtime.scoring import evaluate_arrays, format_table

    # two real and two fake videos of 3 frames; one fake video has one misleading frame
    labels = [0] * 6 + [1] * 6
    probs = [0.1, 0.2, 0.1, 0.3, 0.2, 0.9, 0.8, 0.7, 0.1, 0.9, 0.9, 0.8]
    videos = ["r1"] * 3 + ["r2"] * 3 + ["f1"] * 3 + ["f2"] * 3
    rows = evaluate_arrays(labels, probs, ["g"] * 12, videos=videos)
    assert rows[0]["n_videos"] == 4 and rows[-1]["n_videos"] == 4
    assert rows[0]["video_auc"] == 1.0  # per-video means 0.13, 0.47 < 0.53, 0.87
    assert rows[0]["auc"] < 1.0  # frame level is not perfect
    assert "video_auc" in format_table(rows)


def test_video_with_mixed_labels_is_refused():
    import pytest

    from tfdefakeq.core.errors import UserError
    from tfdefakeq.runtime.scoring import evaluate_arrays

    with pytest.raises(UserError, match="video v: its frames carry both labels"):
        evaluate_arrays([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], ["g"] * 4, videos=["v", "v", "w", "x"])


def test_cross_generator_rows_mark_unseen_generators():
    from tfdefakeq.runtime.scoring import evaluate_arrays, format_table, mark_seen

    labels = [0, 1] * 6
    probs = [0.2, 0.8, 0.3, 0.7, 0.1, 0.9, 0.6, 0.4, 0.5, 0.6, 0.2, 0.3]
    gens = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    rows = mark_seen(evaluate_arrays(labels, probs, gens), ["a"])
    by_name = {r["generator"]: r for r in rows}
    assert by_name["a"]["seen"] is True and by_name["b"]["seen"] is False
    assert by_name["mean_unseen"]["ap"] == (by_name["b"]["ap"] + by_name["c"]["ap"]) / 2
    assert by_name["mean_unseen"]["n"] == 8
    assert "seen" in format_table(rows)
    assert mark_seen(rows[:1], []) == rows[:1]


def test_cli_without_split_reads_test_never_train(tiny_models, forensynths_root, tmp_path, capfd):
    """A root holding train/ and test/ is read at test/ by default: train/ is never a 'generator'."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(forensynths_root / "test", root / "test")
    shutil.copytree(forensynths_root / "test", root / "train" / "seen_gan")  # generators gan_a/gan_b renamed
    code, out, _ = run_cli([tiny_models["float32"], "--data", root, "--out", tmp_path / "out"], capfd)
    assert code == 0
    table = list(csv.DictReader(line for line in output_paths(tmp_path / "out", "tiny_float32.test")["csv"]
                                .read_text().splitlines() if not line.startswith("#")))
    assert [r["generator"] for r in table] == [*GENERATORS, "mean"]

    shutil.rmtree(root / "test")
    code, _, err = run_cli([tiny_models["float32"], "--data", root], capfd)
    assert code == 2 and err.strip() == f"tfdefakeq evaluate: error: {root}: holds the splits train but no test/: pass --split"
    code, _, err = run_cli([tiny_models["float32"], "--data", root / "train" / "seen_gan"], capfd)  # a root at one split
    assert code == 0


def test_progress_in_a_log_is_rate_limited_lines_without_carriage_returns():
    from tfdefakeq.runtime.scoring import Progress

    stream = io.StringIO()  # not a terminal
    clock = iter(range(0, 10_000, 1))  # one second per call
    progress = Progress("evaluate m", stream=stream, log_every_s=30, clock=lambda: next(clock))
    for done in range(1, 101):
        progress(done, 100)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 4  # at 30, 60, 90 s and the end
    assert lines[-1].startswith("evaluate m: 100/100 images,")
    quiet = io.StringIO()
    progress = Progress("evaluate m", stream=quiet, enabled=False)
    progress(1, 1)
    progress.close()
    assert quiet.getvalue() == ""


def test_cli_quiet_and_log_progress(tiny_models, forensynths_root, capfd):
    code, _, err = run_cli([tiny_models["float32"], "--data", forensynths_root], capfd)
    assert code == 0 and "\r" not in err
    n = 2 * len(GENERATORS) * PER_CLASS
    # (the loader's one-line warning about the fixture's hash-less manifest, and the note that it records no
    # threshold, are not progress)
    notes = ("tfdefakeq: warning:", "tfdefakeq evaluate: note:")
    (line,) = [l for l in err.splitlines() if not l.startswith(notes)]
    assert re.fullmatch(rf"evaluate tiny_float32.tflite: {n}/{n} images, \d+ s", line)
    code, _, err = run_cli([tiny_models["float32"], "--data", forensynths_root, "--quiet"], capfd)
    assert code == 0 and [l for l in err.splitlines() if not l.startswith(notes)] == []
