"""One worker of the multi-worker tests: `python tests/engine/multiworker_worker.py TRAIN-ARGS...`.

Runs `tfdefakeq.train` as it is. With TFDEFAKEQ_TEST_KILL_AT=EPOCH:BATCH in the environment the
process sends itself SIGKILL when that batch of that epoch (both from 0) starts: a worker dying
mid-epoch, at a point the test chooses rather than at a moment a timer guesses.
"""

import os
import signal
import sys


def install_killer(spec: str) -> None:
    from tfdefakeq.core.tfcompat import keras

    epoch, batch = (int(x) for x in spec.split(":"))
    fit = keras.Model.fit

    class Kill(keras.callbacks.Callback):
        current = -1

        def on_epoch_begin(self, e, logs=None):
            self.current = e

        def on_train_batch_begin(self, b, logs=None):
            if self.current == epoch and b == batch:
                print(f"killing myself at epoch {epoch} batch {batch}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    def fit_with_kill(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=list(callbacks or []) + [Kill()], **kwargs)

    keras.Model.fit = fit_with_kill


if __name__ == "__main__":
    if os.environ.get("TFDEFAKEQ_TEST_KILL_AT"):
        install_killer(os.environ["TFDEFAKEQ_TEST_KILL_AT"])
    from tfdefakeq import train

    train.cli(sys.argv[1:])
