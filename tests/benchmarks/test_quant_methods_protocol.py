"""Protocol v2 of benchmarks/quant_methods.py (issue 14): the pure parts, fast.

The paired bootstrap CI, the words a CI turns into, budgets, commit-keyed rows, the wallpaper photo
list and the extra photos of the synthetic data."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def qm():
    return _script("quant_methods")


def _scores(n=60, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    gens = np.repeat(["a", "b"], 2 * n)
    labels = np.tile(np.repeat([0, 1], n), 2)
    signal = labels + rng.normal(0, noise, len(labels))
    return labels, gens, signal


def test_bootstrap_of_a_model_against_itself_is_zero(qm):
    labels, gens, p = _scores()
    point, lo, hi = qm.paired_bootstrap_ci(labels, gens, p[None], p[None], ("a", "b"), n=200)
    assert point == lo == hi == 0.0


def test_bootstrap_point_is_the_seed_mean_difference_and_the_ci_brackets_it(qm):
    labels, gens, clean = _scores(noise=0.5)
    rng = np.random.default_rng(1)
    worse = np.stack([clean + rng.normal(0, 1.5, len(clean)) for _ in range(3)])
    point, lo, hi = qm.paired_bootstrap_ci(labels, gens, worse, clean[None], ("a", "b"), n=300)
    expected = 100 * (np.mean([qm.group_metric(labels, gens, w, ("a", "b")) for w in worse])
                      - qm.group_metric(labels, gens, clean, ("a", "b")))
    assert point == pytest.approx(expected)
    assert lo < point < hi < 0  # the clean scores are clearly better: the CI excludes 0
    assert qm.verdict(lo, hi) == "worse (CI below 0)"


def test_bootstrap_is_paired_and_seeded(qm):
    labels, gens, p = _scores(noise=1.0)
    q = p + np.random.default_rng(3).normal(0, 0.05, len(p))  # nearly the same scores
    first = qm.paired_bootstrap_ci(labels, gens, q[None], p[None], ("a",), n=300, seed=7)
    assert first == qm.paired_bootstrap_ci(labels, gens, q[None], p[None], ("a",), n=300, seed=7)
    # paired on the same images, a tiny perturbation gives a tiny interval (unpaired resampling would not)
    assert first[2] - first[1] < 1.5


def test_verdict_calls_an_interval_holding_zero_a_tie(qm):
    assert qm.verdict(-0.4, 0.3) == "a tie (CI includes 0)"
    assert qm.verdict(0.0, 0.3) == "a tie (CI includes 0)"
    assert qm.verdict(0.1, 0.3) == "better (CI above 0)"
    assert qm.verdict(-0.3, -0.1) == "worse (CI below 0)"


def test_budgets_are_the_float_file_over_the_divisor(qm):
    assert qm.budget_bytes(11_202_236, "10.7") == 1_046_937
    assert qm.budget_bytes(11_202_236, "16") == 700_139
    assert {qm.METHODS[m][2] for m in qm.METHODS if m.startswith("adaptive")} == set(qm.BUDGETS)


def test_every_qat_method_names_each_train_flag_once_and_its_epochs_win(qm):
    """A method's own --epochs replaces --qat-epochs (no flag twice, where argparse would keep the last)."""
    from argparse import Namespace

    from tfdefakeq.train import parse_args

    bench = Namespace(qat_epochs=3)
    for method, (kind, options, _) in qm.METHODS.items():
        if kind != "qat":
            continue
        argv = qm.qat_arguments([o.replace("{budget}", "1000") for o in options], Path("f.weights.h5"), bench)
        flags = [a for a in argv if a.startswith("--")]
        assert len(flags) == len(set(flags)), method
        parsed = parse_args(["--data", "d", "--out", "o"] + argv)
        assert parsed.epochs == (6 if method.endswith("_epochs6") else 3), method
        assert parsed.init == "f.weights.h5" and parsed.lr == 1e-4


def test_vertical_pairs_differ_in_the_split_alone_and_report_the_split_layers(qm):
    for variant, reference in qm.VERTICAL_PAIRS:
        (kind, a, budget), (_, b, ref_budget) = qm.METHODS[variant], qm.METHODS[reference]
        assert budget == ref_budget and kind == "qat"
        split_flags = {"--salient-ratio", "--channel-choice"}
        strip = lambda opts: [o for i, o in enumerate(opts) if o not in split_flags and (i == 0 or opts[i - 1] not in split_flags)]
        assert strip(a) == strip(b) and a != b, (variant, reference)
    part = pd.DataFrame({"method": ["a", "a", "a", "b", "b", "c"], "split_layers": [0, 2, 1, 1, 1, None]})
    assert qm.split_layers_text(part, "a") == "0-2 split layers per seed"
    assert qm.split_layers_text(part, "b") == "1 split layers in every seed"
    assert qm.split_layers_text(part, "c") == "split layers not recorded"


def test_rows_of_another_commit_are_dropped_not_mixed(qm):
    rows = pd.DataFrame({"commit": ["abc", "def", "abc"], "method": ["float", "float", "lsq_w4a8"]})
    kept, dropped = qm.keep_commit(rows, "abc")
    assert dropped == 1 and list(kept.method) == ["float", "lsq_w4a8"] and set(kept.commit) == {"abc"}


def test_held_out_families_are_never_trained_on(qm):
    from tfdefakeq.data.synthetic import GENERATORS

    assert not set(qm.TRAIN_GENERATORS) & set(qm.HELD_OUT_GENERATORS)
    assert set(qm.TRAIN_GENERATORS) | set(qm.HELD_OUT_GENERATORS) == set(GENERATORS)


def test_wallpaper_list_is_explicit_photographs_with_unique_names():
    wallpapers = _script("wallpapers")
    from tfdefakeq.data.synthetic import SOURCES

    names = [n for photos in wallpapers.PHOTOS.values() for n in photos]
    assert len(names) == len(set(names)) >= 36
    assert not set(names) & {s.name for s in SOURCES}
    # the ones looked at and left out as artwork are not in the list
    paths = " ".join(p for photos in wallpapers.PHOTOS.values() for p in photos.values())
    for artwork in ("Autumn", "Kite", "Painting-Colors", "Fossa", "ukui"):
        assert artwork not in paths


def test_wallpaper_fetch_names_a_listed_file_missing_from_its_package(tmp_path, monkeypatch):
    wallpapers = _script("wallpapers")
    monkeypatch.setattr(wallpapers, "PHOTOS", {"pkg": {"p1": "usr/share/p1.jpg"}})
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / "pkg_1.0_all.deb").write_bytes(b"")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd[0])
        Path(cmd[-1]).mkdir(parents=True, exist_ok=True)  # dpkg-deb -x DEB DIR: an empty package

    monkeypatch.setattr(wallpapers.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match=r"pkg: usr/share/p1.jpg is not in the package"):
        wallpapers.fetch(tmp_path, log=lambda *_: None)
    assert calls == ["dpkg-deb"]  # the .deb was there: no apt-get


def test_extra_photos_join_the_wheel_photos_and_keep_old_hashes(tmp_path):
    from PIL import Image

    from tfdefakeq.core.errors import UserError
    from tfdefakeq.data.synthetic import SyntheticConfig, load_photos

    assert "extra_photos" not in SyntheticConfig().to_json()  # the default data keeps its cache folder
    photo = tmp_path / "wall.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(photo)
    config = SyntheticConfig(photos=("coffee",), extra_photos=(f"wall={photo}",))
    config.validate()
    assert config.hash() != SyntheticConfig(photos=("coffee",)).hash()
    photos, _ = load_photos(config.photos, config.extra_sources())
    assert [p.source.name for p in photos][-1] == "wall" and photos[-1].image.shape == (80, 96, 3)
    with pytest.raises(UserError, match="extra_photos"):
        SyntheticConfig(extra_photos=("coffee=/x.jpg",)).validate()  # a wheel photo's name


def test_mct_kernels_are_made_symmetric_and_packed_without_changing_values(qm):
    """MCT's exporter writes low-bit kernels on an int8 grid and with non-zero zero points (litert's
    CONV_2D refuses those): pack_low_bit_kernels keeps every dequantized value and stores fewer bits."""
    from tfdefakeq.runtime.modelinfo import schema_module
    from tfdefakeq.runtime.unpack import INT2, INT4, serialize_model

    content = (ROOT / "tflite_models" / "resnet18_64_int8.tflite").read_bytes()
    schema = schema_module()
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]
    convs = [op for op in graph.operators
             if max(model.operatorCodes[op.opcodeIndex].builtinCode, model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == 3]
    rng = np.random.default_rng(0)
    for op, (levels, step, zero) in zip(convs[1:3], [(7, 16, 0), (1, 1, 2)]):  # a 4-bit grid x16; a 2-bit grid, zp 2
        t = graph.tensors[op.inputs[1]]
        values = rng.integers(-levels, levels + 1, int(np.prod(t.shape))) * step + zero
        model.buffers[t.buffer].data = values.astype(np.int8).view(np.uint8)
        t.quantization.zeroPoint = [zero] * len(t.quantization.scale)
    edited = serialize_model(schema, model, len(content))
    packed, rewritten = qm.pack_low_bit_kernels(edited)
    before, after = qm.dequantized_kernels(edited), qm.dequantized_kernels(packed)
    assert rewritten == len(before) and len(packed) < len(edited)
    for (_, a), (_, b) in zip(before, after):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=0)
    types = [t for t, _ in after]
    assert INT4 in types and INT2 in types  # the x16 grid became INT4, the 2-bit one INT2


def test_calibrated_threshold_matches_the_float_real_fpr_on_the_same_val_images(qm):
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    gens = np.array(["a"] * 8)
    float_probs = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95])  # 1 of 4 reals called fake at 0.5
    shifted = float_probs + 0.2  # the quantized model's scores drifted up: 0.5 would flag 2 of 4 reals
    t = qm.calibrated_threshold((labels, gens, shifted), (labels, gens, float_probs))
    assert 0.5 < t < 0.8 and np.mean(shifted[labels == 0] > t) == 0.25
    with pytest.raises(RuntimeError, match="different val images"):
        qm.calibrated_threshold((labels[::-1], gens, shifted), (labels, gens, float_probs))


def test_threshold_sentence_judges_the_calibrated_accuracies_against_both_targets(qm):
    base = pd.Series({"held_acc": 0.80, "held_real_acc": 0.90})
    part = pd.DataFrame({"method": ["m", "m"], "threshold": [0.6, 0.7], "held_acc": [0.75, 0.77],
                         "held_real_acc": [0.80, 0.82], "held_acc_cal": [0.795, 0.80], "held_real_acc_cal": [0.89, 0.90]})
    text = qm.threshold_sentence(part, base, "m")
    assert text.startswith("m at its calibrated threshold (mean 0.650): held-out dacc -0.25 pp, dreal_acc -0.50 pp (meets both")
    assert text.endswith("at 0.5: -4.00 / -9.00 pp.")
    part["held_real_acc_cal"] = [0.85, 0.86]
    assert "(meets the accuracy one only" in qm.threshold_sentence(part, base, "m")
    part["held_acc_cal"] = [0.70, 0.70]
    assert "(meets neither" in qm.threshold_sentence(part, base, "m")


def test_summarize_gives_calibrated_columns_and_leaves_them_empty_for_older_rows(qm, tmp_path):
    import argparse

    labels, gens, signal = _scores(n=30)
    gens = np.where(gens == "a", qm.HELD_OUT_GENERATORS[0], qm.HELD_OUT_GENERATORS[1])
    (tmp_path / "scores").mkdir()
    probs = {"float": 1 / (1 + np.exp(-signal)), "adaptive_fp32_8x": 1 / (1 + np.exp(-(signal + 0.3)))}
    for method, p in probs.items():
        for seed in (0, 1):
            np.savez(tmp_path / "scores" / f"b_{method}_s{seed}.npz", labels=labels, generators=gens, probs=p)
    row = {"backbone": "b", "size_bytes": 800.0, "kernel_bits": 4.0, "latency_ms": 1.0, "error": np.nan, "split_layers": 0,
           **{f"{g}_{m}": 0.8 for g in ("held", "in") for m in qm.METRICS}}
    done = pd.DataFrame([{**row, "method": "float", "seed": 0, "size_bytes": 8000.0, "threshold": 0.5,
                          **{f"held_{m}_cal": 0.8 for m in qm.CAL_METRICS}}]
                        + [{**row, "method": "adaptive_fp32_8x", "seed": s, "threshold": 0.6, "held_acc_cal": 0.81,
                            "held_real_acc_cal": 0.79, "held_fake_acc_cal": 0.83} for s in (0, 1)])
    table, sentences = qm.summarize(done, tmp_path, argparse.Namespace(bootstrap=50))
    ours = table[table.method == "adaptive_fp32_8x"].iloc[0]
    assert ours.dacc_cal_held == "+1.00 ± 0.00" and ours.dreal_acc_cal_held == "-1.00 ± 0.00" and ours.threshold == 0.6
    (text,) = [s for s in sentences if s.startswith("b at <= fp32/8 (1,000 B): adaptive_fp32_8x held-out dAP")]
    assert "no peer's file fits this budget" in text and "smallest peer" not in text  # no peer measured at all
    assert any("adaptive_fp32_8x at its calibrated threshold (mean 0.600)" in s and "(meets both" in s for s in sentences)
    peer = [{**row, "method": "lsq_w2a8", "seed": s, "size_bytes": 1500.0, "threshold": 0.5, "held_acc_cal": 0.8,
             "held_real_acc_cal": 0.8, "held_fake_acc_cal": 0.8} for s in (0, 1)]
    for seed in (0, 1):
        np.savez(tmp_path / "scores" / f"b_lsq_w2a8_s{seed}.npz", labels=labels, generators=gens, probs=probs["float"])
    table, sentences = qm.summarize(pd.concat([done, pd.DataFrame(peer)], ignore_index=True), tmp_path,
                                    argparse.Namespace(bootstrap=50))
    (text,) = [s for s in sentences if s.startswith("b at <= fp32/8")]
    assert "no peer's file fits this budget; against the smallest peer file measured, lsq_w2a8 (1.88x this " \
           "method's bytes): " in text
    assert table[table.method == "adaptive_fp32_8x"].ci_vs_peer.iloc[0].startswith("lsq_w2a8 (1.88x the bytes): ")
    older = done.drop(columns=["threshold"] + [f"held_{m}_cal" for m in qm.CAL_METRICS])
    table, sentences = qm.summarize(older, tmp_path, argparse.Namespace(bootstrap=50))
    assert (table.dacc_cal_held == "").all() and not any("calibrated threshold" in s for s in sentences)


def test_our_plan_with_their_ptq_is_no_peer_and_measures_what_qat_adds(qm, tmp_path):
    """aeq_our_plan_* (our plan, ai-edge-quantizer's rounding) and mct_plan_our_qat_* (MCT's plan, our
    QAT) fit the budget and score above the peer, yet neither is the "best peer" (each is half ours);
    each gets its own sentence: ours minus it, paired on the same images and seeds."""
    import argparse

    labels, gens, signal = _scores(n=30)
    gens = np.where(gens == "a", qm.HELD_OUT_GENERATORS[0], qm.HELD_OUT_GENERATORS[1])
    (tmp_path / "scores").mkdir()
    probs = {"float": signal, "adaptive_fp32_10.7x": signal, "aeq_our_plan_10.7x": signal + np.sin(7 * signal),
             "mct_plan_our_qat_10.7x": signal, "lsq_w2a8": signal + 1.5 * np.sin(5 * signal)}
    row = {"backbone": "b", "kernel_bits": 4.0, "latency_ms": 1.0, "error": np.nan, "split_layers": 0,
           **{f"{g}_{m}": 0.8 for g in ("held", "in") for m in qm.METRICS}}
    rows = []
    for method, p in probs.items():
        for seed in ((0,) if method == "float" else (0, 1, 2)):
            np.savez(tmp_path / "scores" / f"b_{method}_s{seed}.npz", labels=labels, generators=gens, probs=p)
            size = {"float": 10_700.0, "lsq_w2a8": 900.0}.get(method, 950.0)
            rows.append({**row, "method": method, "seed": seed, "size_bytes": size,
                         "held_ap": 0.8 if method != "aeq_our_plan_10.7x" else 0.79, "plan_layers_raised": 2})
    table, sentences = qm.summarize(pd.DataFrame(rows), tmp_path, argparse.Namespace(bootstrap=50))
    ours = table[table.method == "adaptive_fp32_10.7x"].iloc[0]
    assert ours.ci_vs_peer.startswith("lsq_w2a8: ")
    (text,) = [s for s in sentences if "what QAT adds" in s]
    assert text.startswith("b what QAT adds to the allocation: adaptive_fp32_10.7x minus aeq_our_plan_10.7x (the same "
                           "seeds' plans rounded by ai-edge-quantizer, float activations, 1.00x the bytes; 2 layer(s) "
                           "stored above the plan's bits; 0 split layers in every seed not reproduced): +")
    assert "(CI [+" in text and "better (CI above 0)" in text
    (text,) = [s for s in sentences if "what our allocator adds" in s]  # the same scores: no difference
    assert text == ("b what our allocator adds: adaptive_fp32_10.7x minus mct_plan_our_qat_10.7x (our QAT on the bits "
                    "MCT's search chose, 1.00x the bytes): +0.00 pp held-out AP (CI [+0.00, +0.00]: a tie (CI includes 0)).")


def test_a_plan_ptq_without_its_plan_run_is_refused(qm, capsys):
    with pytest.raises(SystemExit):
        qm.parse_args(["--methods", "float", "aeq_our_plan_13x"])
    assert "aeq_our_plan_13x takes the plan of adaptive_fp32_13x: add it to --methods" in capsys.readouterr().err
    args = qm.parse_args(["--methods", "aeq_our_plan_13x", "adaptive_fp32_13x"])
    assert {qm.METHODS[m][2] for m in args.methods} == {"13"}
    for method, (kind, options, budget) in qm.METHODS.items():
        if kind == "aeq_plan":
            assert qm.METHODS[options[0]][0] == "qat" and qm.METHODS[options[0]][2] == budget and options[0].startswith("adaptive")
        if kind == "qat_mct_plan":  # MCT's plan at the same budget, compared with our method at that budget
            assert qm.METHODS[options[0]][0] == "mct" and qm.METHODS[options[0]][2] == budget
            assert f"adaptive_fp32_{budget}x" in qm.METHODS and method.startswith(qm.HYBRID)


def test_mct_qat_gets_the_batches_our_qat_of_the_seed_trains_on(qm, synthetic_root, tmp_path):
    """dump_batches: the training families' batches of `train --seed S` (same draws, augmentation and
    order, epoch after epoch) and the val images, as MCT's QAT reads them; made once."""
    import argparse

    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.data.augment import AugmentConfig
    from tfdefakeq.data.folders import scan_forensynths
    from tfdefakeq.data.reader import make_dataset

    args = argparse.Namespace(input_size=32, batch_size=8, qat_epochs=2)
    train_dir, val_dir = qm.dump_batches(synthetic_root, Preprocess(), args, tmp_path / "b", seed=3)
    x, y, sizes = (np.load(train_dir / f"{n}.npy") for n in ("x", "y", "sizes"))
    train = [s for s in scan_forensynths(synthetic_root, "train") if s.generator in qm.TRAIN_GENERATORS]
    per_epoch = -(-len(train) // 8)
    assert len(sizes) == 2 * per_epoch and sizes.sum() == len(x) == len(y) == 2 * len(train)
    assert x.dtype == np.float16 and x.shape[1:] == (32, 32, 3) and set(np.unique(y)) == {0.0, 1.0}
    ours = make_dataset(train, (32, 32), 8, training=True, seed=3, augment_config=AugmentConfig(blur_prob=0.1, jpeg_prob=0.1),
                        epochs=(0, 2))
    for i, (bx, by) in enumerate(ours.take(len(sizes)).as_numpy_iterator()):
        start = sizes[:i].sum()
        np.testing.assert_allclose(x[start:start + len(by)], bx, rtol=1e-3, atol=2e-3)
        np.testing.assert_array_equal(y[start:start + len(by)], by.ravel())
    val = [s for s in scan_forensynths(synthetic_root, "val") if s.generator in qm.TRAIN_GENERATORS]
    assert len(np.load(val_dir / "y.npy")) == len(val)
    stamp = (train_dir / "x.npy").stat().st_mtime_ns
    assert qm.dump_batches(synthetic_root, Preprocess(), args, tmp_path / "b", seed=3) == (train_dir, val_dir)
    assert (train_dir / "x.npy").stat().st_mtime_ns == stamp  # reused, not made again


def test_mct_driver_refuses_flags_its_mode_would_ignore(capsys):
    from tests.support import load_benchmark

    driver = load_benchmark("peers/mct_mixed")
    base = ["--model", "m.h5", "--calib", "c.npy", "--weights-memory", "1000", "--out", "o.tflite"]
    for extra, message in ((["--qat-epochs", "2"], "--qat-epochs, --train and --val need --qat"),
                           (["--qat", "--gptq-epochs", "5"], "--qat and --gptq-epochs are two different methods"),
                           (["--qat", "--qat-epochs", "3"], "--qat-epochs > 0 needs --train and --val")):
        with pytest.raises(SystemExit):
            driver.main(base + extra)
        assert message in capsys.readouterr().err


def test_mct_qat_fine_tuning_keeps_the_best_val_auc_epoch(tmp_path):
    """The driver's training loop (run here on a plain Keras model, as MCT's wrapped model is one): the
    kept weights are those of the epoch with the best val AUC, not the last epoch's."""
    import argparse

    from tests.support import load_benchmark
    from tfdefakeq.core.tfcompat import keras

    driver = load_benchmark("peers/mct_mixed")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 96).astype(np.float32)
    x = (rng.normal(0, 1, (96, 4, 4, 3)) + 0.2 * y[:, None, None, None]).astype(np.float16)
    for folder, images, labels in ((tmp_path / "train", x, y), (tmp_path / "val", x[:32], 1 - y[:32])):
        folder.mkdir()  # val's labels inverted: the more the model learns, the worse its val AUC
        np.save(folder / "x.npy", images)
        np.save(folder / "y.npy", labels)
    np.save(tmp_path / "train" / "sizes.npy", np.array([16] * 6, np.int32))
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    snapshots = []
    args = argparse.Namespace(train=str(tmp_path / "train"), val=str(tmp_path / "val"), qat_epochs=3, lr=0.02,
                              weight_decay=0.0, seed=0)
    original = driver.json.dumps

    def spy(obj, *a, **k):  # each epoch's log line: remember the weights it ended with
        snapshots.append([w.copy() for w in model.get_weights()])
        return original(obj, *a, **k)

    driver.json.dumps = spy
    try:
        history = driver.fine_tune(model, args)
    finally:
        driver.json.dumps = original
    assert [h["epoch"] for h in history] == [1, 2, 3] and len(snapshots) == 3
    aucs = [h["val_auc"] for h in history]
    best = int(np.argmax(aucs))
    assert best < 2 and aucs[best] > aucs[2]  # the last epoch is not the best: keeping it would be wrong
    for kept, expected in zip(model.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(kept, expected)


def test_mcts_allocation_becomes_our_bit_plan_layer_for_layer(qm, tiny_float_model, tmp_path):
    """mct_plan: MCT's per-layer bits (its "<conv>_bn" names for folded convs) -> our bit-plan file, every
    weighted layer of our folded model covered; a layer it names that we lack, or one it skips, is an error."""
    import json

    from tfdefakeq.engine.modelio import load_detector
    from tfdefakeq.quant.fold import fold_batchnorm
    from tfdefakeq.quant.horizontal import QuantPlan
    from tfdefakeq.quant.schemes import plan_weight_bits

    model, _ = load_detector(tiny_float_model)
    layers = list(plan_weight_bits(fold_batchnorm(model), 4))
    want = {name: (8, 4, 2)[i % 3] for i, name in enumerate(layers)}
    mct_names = {name: name if name in ("highpass", "predictions") else name + "_bn" for name in layers}
    (tmp_path / "tflite").mkdir()
    source = tmp_path / "tflite" / "b_mct_mixed_10.7x_s0.mct.tflite.json"

    def write(layer_bits):
        source.write_text(json.dumps({"layer_bits": layer_bits, "weight_bits": {}}))

    write({mct_names[n]: b for n, b in want.items()})
    path = qm.mct_plan("mct_plan_our_qat_10.7x", "b", tiny_float_model, tmp_path, 0)
    plan = QuantPlan.load(path)
    assert plan.weight_bits == want and plan.salient_channels == {} and plan.per_tensor == []
    write({**{mct_names[n]: b for n, b in want.items()}, "not_ours_bn": 4})
    with pytest.raises(RuntimeError, match="MCT's layer not_ours_bn is no weighted layer of ours"):
        qm.mct_plan("mct_plan_our_qat_10.7x", "b", tiny_float_model, tmp_path, 0)
    write({mct_names[n]: b for n, b in list(want.items())[1:]})
    with pytest.raises(RuntimeError, match=f"MCT gave no bits to {layers[0]}"):
        qm.mct_plan("mct_plan_our_qat_10.7x", "b", tiny_float_model, tmp_path, 0)
    source.unlink()
    with pytest.raises(RuntimeError, match="needs the plan of mct_mixed_10.7x"):
        qm.mct_plan("mct_plan_our_qat_10.7x", "b", tiny_float_model, tmp_path, 0)


def test_a_peer_file_gets_a_manifest_of_its_own(qm, tmp_path, capfd):
    """write_peer: the tool's bytes and the float manifest made theirs (scheme, format, size, SHA-256, no
    converter names), published together; the runtime then opens the file without a warning."""
    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.runtime.loader import load_model, sha256_hex

    shipped = ROOT / "tflite_models" / "resnet18_64_int8.tflite"
    content = shipped.read_bytes()
    float_manifest = Manifest.load(manifest_path(shipped))
    float_manifest.tensor_names = ["from", "the", "float", "file"]
    target = tmp_path / "b_peer_s0.tflite"
    qm.write_peer(target, content, float_manifest, "aeq_our_plan_10.7x", "aeq_plan")
    written = Manifest.load(manifest_path(target))
    assert target.read_bytes() == content and written.sha256 == sha256_hex(content) and written.size_bytes == len(content)
    assert (written.scheme, written.format, written.tensor_names) == ("aeq_our_plan_10.7x", "aeq_plan", [])
    assert written.preprocess == float_manifest.preprocess and float_manifest.tensor_names == ["from", "the", "float", "file"]
    capfd.readouterr()
    load_model(target)  # as the scoring reads it: the manifest beside the file, its hash checked
    assert "warning" not in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b_peer_s0.manifest.json", "b_peer_s0.tflite"]  # no temp left
