import numpy as np
import pytest


def test_set_batchnorm_statistics_takes_the_images_statistics():
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.training import set_batchnorm_statistics

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn")(conv)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x)))
    images = np.random.default_rng(0).normal(2.0, 3.0, (8, 6, 6, 2)).astype(np.float32)
    trainable = [w.copy() for w in model.get_weights()[:2]]  # conv kernel and bias
    assert set_batchnorm_statistics(model, images) == 1
    features = keras.Model(inputs, conv)(images).numpy()
    bn = model.get_layer("bn")
    assert bn.momentum == 0.999
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), features.var(axis=(0, 1, 2), ddof=1), rtol=1e-3)  # Keras keeps the unbiased variance
    for before, after in zip(trainable, model.get_weights()[:2]):
        np.testing.assert_array_equal(before, after)
    # in inference mode the normalised features now have zero mean and unit variance
    normalised = keras.Model(inputs, x)(images, training=False).numpy()
    assert normalised.mean() == pytest.approx(0.0, abs=1e-3) and normalised.var() == pytest.approx(1.0, rel=1e-2)


def test_best_epoch_puts_back_the_best_weights_and_a_resumed_run_knows_them(tmp_path):
    """Epochs logging val_auc 0.5, 0.9, 0.9, 0.7 keep epoch 1's weights (the earliest of equal
    values); a new keeper reading the folder (a resumed run) knows value and epoch, and its model
    gets those weights too."""
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.training import BestEpoch

    def model():
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))

    student = model()
    keeper = BestEpoch(tmp_path / "best", student)
    assert keeper.restore_kept() == -1  # nothing kept yet
    weights = {}
    for epoch, value in enumerate([0.5, 0.9, 0.9, 0.7]):
        student.set_weights([np.full_like(w, epoch + 1.0) for w in student.get_weights()])
        weights[epoch] = [w.copy() for w in student.get_weights()]
        keeper.callback.on_epoch_end(epoch, {"val_auc": value, "loss": 1.0})
    assert keeper.restore_kept() == 1
    for kept, expected in zip(student.get_weights(), weights[1]):
        np.testing.assert_array_equal(kept, expected)
    other = model()
    resumed = BestEpoch(tmp_path / "elsewhere", other, restore_from=tmp_path / "best")
    assert resumed.resume() == 1 and float(resumed.value.numpy()) == pytest.approx(0.9)
    for kept, expected in zip(other.get_weights(), weights[1]):
        np.testing.assert_array_equal(kept, expected)
    assert not resumed.update(4, 0.85)  # below the best it read: nothing written
    other.set_weights([w + 5 for w in other.get_weights()])  # a later epoch's weights
    assert resumed.restore_kept() == 1 and not list((tmp_path / "elsewhere").glob("ckpt*"))
    for kept, expected in zip(other.get_weights(), weights[1]):  # a non-chief worker's case: what it read
        np.testing.assert_array_equal(kept, expected)
    with pytest.raises(Exception, match="val_auc"):
        keeper.callback.on_epoch_end(5, {"loss": 1.0})


def test_history_rows_are_found_by_epoch_not_by_position(tmp_path):
    """A run killed after an epoch's row and before its checkpoint reruns that epoch on --resume and
    logs it again: the rerun's row counts. A history with an epoch missing is refused, not misread."""
    from tfdefakeq.core.errors import UserError
    from tfdefakeq.engine.training import read_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_auc\n0,0.9,0.6\n1,0.8,0.7\n1,0.7,0.75\n2,0.6,0.8\n")
    history = read_history(path, 3)
    assert [row["val_auc"] for row in history] == [0.6, 0.75, 0.8]
    assert "epoch" not in history[0]

    path.write_text("epoch,loss,val_auc\n0,0.9,0.6\n2,0.6,0.8\n")
    with pytest.raises(UserError, match=r"history.csv: no row for epoch\(s\) \[2\] of 3"):
        read_history(path, 3)
    assert read_history(path, 3, complete=False)[1] == {}  # a non-chief worker's log after a resume
    assert read_history(tmp_path / "none.csv", 3) == []
