"""Training on two workers with TensorFlow's MultiWorkerMirroredStrategy, on this machine.

Two worker processes (TF_CONFIG with 127.0.0.1 ports) train together and must reach the weights of
a 1-process run with the same global batch and seed. The 1-process reference mirrors over two
logical CPUs: like the two workers it has two replicas, and so the same per-replica BatchNorm
statistics (each replica normalises its half of the global batch; a 1-replica run normalises the
whole batch, a different computation, not a rounding difference).

Tolerance: all-reduce sums the two replicas' gradients in another order than the 1-process run
does, a rounding difference (~1e-7 relative) per step that Adam's normalised updates carry on; over
one epoch of a tiny detector it stays far below the weights' own scale (each test prints the difference it
measured; run with -s). TOLERANCE is stated on the
largest absolute difference relative to the largest absolute weight of each tensor.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_TRAIN

WORKER = Path(__file__).with_name("multiworker_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5  # max |w_2workers - w_1process| / max |w_1process| per tensor
TIMEOUT = 600


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_env(ports, index, extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                   "task": {"type": "worker", "index": index}})
    env.update(extra or {})
    return env


def start_cluster(args, kill_at=None):
    """Two workers running `tfdefakeq.train args --strategy multiworker`; worker 1 kills itself at kill_at."""
    ports = free_ports(2)
    procs = []
    for index in range(2):
        extra = {"TFDEFAKEQ_TEST_KILL_AT": kill_at} if kill_at and index == 1 else None
        procs.append(subprocess.Popen([sys.executable, str(WORKER)] + args + ["--strategy", "multiworker"],
                                      env=worker_env(ports, index, extra), cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return procs


def finish(procs, timeout=TIMEOUT):
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outputs


def run_cluster(args):
    procs = start_cluster(args)
    outputs = finish(procs)
    for index, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"worker {index} exited {p.returncode}:\n{out[-3000:]}"
    return outputs


def run_reference(args):
    """The same training in one process over two logical CPUs (two replicas)."""
    result = subprocess.run([sys.executable, "-m", "tfdefakeq.train"] + args + ["--strategy", "mirrored",
                            "--logical-cpus", "2"], env=dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES=""),
                            cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "training on 2 replica(s) (mirrored strategy)" in result.stdout
    return result.stdout


def weights(path: Path) -> dict[str, np.ndarray]:
    """The training state in a weights file: the layers' variables and the optimizer's (its step
    count and moments). The metrics' accumulators, also stored there, hold the last evaluation's
    running counts, not what training reached, and are left out."""
    import h5py

    found = {}

    def keep(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith("metrics/"):
            found[name] = np.array(obj)

    with h5py.File(path, "r") as f:
        f.visititems(keep)
    assert any(name.startswith("optimizer/") for name in found), f"{path}: no optimizer state"
    return found


def assert_same_weights(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = 0.0
    for name in wa:
        scale = max(float(np.abs(wb[name]).max()), 1e-12)
        worst = max(worst, float(np.abs(wa[name] - wb[name]).max()) / scale)
    assert worst <= TOLERANCE, f"{a} vs {b}: largest relative weight difference {worst:.2e} > {TOLERANCE}"
    return worst


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory, synthetic_root):
    """A slice of the tiny synthetic tree (hard links): 16 train and 4 val images per generator and
    class, so 8 global batches of 8 an epoch. Every process of these tests starts TensorFlow and
    traces its model; the slice keeps the training itself from adding minutes."""
    root = tmp_path_factory.mktemp("slice")
    for split, per_class in (("train", 16), ("val", 4)):
        for folder in sorted((synthetic_root / split).glob("*/*_*")):
            target = root / split / folder.parent.name / folder.name
            target.mkdir(parents=True)
            files = sorted(folder.iterdir())[:per_class]
            assert len(files) == per_class, folder
            for f in files:
                os.link(f, target / f.name)
    return root


def non_chief_folder(output: str) -> Path:
    line = next(l for l in output.splitlines() if l.startswith("not the chief: this worker writes into"))
    return Path(line.split(" into ", 1)[1].split(" (", 1)[0])


@pytest.mark.slow
@pytest.mark.heavy
def test_two_workers_train_float_then_qat_like_one_process(tmp_path, data_slice):
    base = ["--data", str(data_slice)] + TINY_TRAIN + ["--epochs", "1", "--seed", "3"]
    mw, ref = tmp_path / "mw", tmp_path / "ref"
    outputs = run_cluster(base + ["--out", str(mw)])
    run_reference(base + ["--out", str(ref)])
    assert "training on 2 replica(s) (multiworker strategy)" in outputs[0]
    float_diff = assert_same_weights(mw / "model.weights.h5", ref / "model.weights.h5")

    # only the chief wrote into --out; the other worker's own folder is gone
    assert sorted(p.name for p in mw.iterdir()) == ["history.csv", "model.manifest.json", "model.weights.h5"]
    assert "not the chief" not in outputs[0]
    assert not non_chief_folder(outputs[1]).exists()

    # QAT from the same float model, one epoch, on both
    qat = ["--data", str(data_slice), "--init", str(mw / "model.weights.h5"), "--scheme", "tfmot_int8",
           "--epochs", "1", "--lr", "1e-4", "--seed", "3", "--input-size", "32", "--batch-size", "8", "--aug-prob", "0.1"]
    run_cluster(qat + ["--out", str(tmp_path / "mw_qat")])
    run_reference(qat + ["--out", str(tmp_path / "ref_qat")])
    qat_diff = assert_same_weights(tmp_path / "mw_qat" / "model.weights.h5", tmp_path / "ref_qat" / "model.weights.h5")
    print(f"largest relative weight difference: float {float_diff:.2e}, QAT {qat_diff:.2e}")


@pytest.mark.slow
@pytest.mark.heavy
def test_killed_worker_resumes_from_the_last_checkpoint(tmp_path, data_slice):
    base = ["--data", str(data_slice)] + TINY_TRAIN + ["--epochs", "2", "--seed", "5"]
    out = tmp_path / "mw"
    procs = start_cluster(base + ["--out", str(out)], kill_at="1:2")  # worker 1 dies at epoch 1, batch 2
    worker1_out, _ = procs[1].communicate(timeout=TIMEOUT)
    assert procs[1].returncode == -signal.SIGKILL, worker1_out[-2000:]
    # The chief cannot finish the step without its peer: a cluster restarts as a whole (the guide's recovery).
    time.sleep(2)
    procs[0].kill()
    finish(procs)
    assert not (out / "model.weights.h5").exists()
    assert (out / "backup" / "checkpoint").exists(), "the chief saved no checkpoint after epoch 0"

    outputs = run_cluster(base + ["--out", str(out), "--resume"])
    for output in outputs:
        assert f"resuming after epoch 1 from {out / 'backup'}" in output
    ref = tmp_path / "ref"
    run_reference(base + ["--out", str(ref)])
    diff = assert_same_weights(out / "model.weights.h5", ref / "model.weights.h5")
    print(f"largest relative weight difference after the restart: {diff:.2e}")
    assert not (out / "backup").exists()
