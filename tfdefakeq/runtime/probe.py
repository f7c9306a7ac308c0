"""The child-process probe: a model that passes validation yet crashes the interpreter kills a child, not us.

`probe_in_child(path)` loads the model and invokes it once on zero inputs in a child python, so that a
file which still crashes the C++ interpreter only ends the child; the parent raises a one-line
UserError ("... crashed the TFLite interpreter in a child process (signal 6, SIGABRT)").
`tfdefakeq.runtime.loader` probes every file whose bytes do not hash to its manifest's SHA-256 (no
manifest, another hash, or none recorded); `ChildProbe` keeps one child for many files (the fuzz
campaign). The child checks that the bytes it reads hash to what the parent read (`sha256`), so the
file the probe ran is the file the parent loads.

    >>> probe_in_child("downloaded.tflite")                                    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.interpreter import open_interpreter
from tfdefakeq.runtime.validate import read_tflite


@dataclass
class ProbeResult:
    """What loading and invoking a model in a child process did."""

    status: str  # "ok" | "error" (a UserError in the child) | "crashed" (the child died) | "timeout"
    message: str = ""  # one line naming the file; "" when ok
    signal: int | None = None  # the signal that ended the child, when it crashed
    seconds: float = 0.0  # wall time of the request, the child's start included when it started for it


class ChildProbe:
    """A child python that loads models and invokes them once on zero inputs, one request at a time.

    The child outlives requests (one start, ~0.3 s, for many models) and is restarted after a crash or
    a timeout. `memory_limit_bytes` caps the child's address space, so that a shape that asks for
    terabytes fails there instead of swapping the machine.

        >>> with ChildProbe() as probe:                          # doctest: +SKIP
        ...     probe.run("a.tflite").status                     # "ok"
    """

    # what the child runs ({limit}: memory_limit_bytes); a test swaps in a child that crashes
    child_code = "from tfdefakeq.runtime.probe import serve; serve({limit!r})"

    def __init__(self, timeout_s: float = 120.0, memory_limit_bytes: int | None = None):
        self.timeout_s = float(timeout_s)
        self.memory_limit_bytes = memory_limit_bytes
        self.starts = 0  # children started so far
        self._proc = None

    def __enter__(self) -> ChildProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, path, num_threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True,
            sha256: str | None = None) -> ProbeResult:
        """Loads and invokes `path` in the child; `sha256`: the hash the file's bytes must have there."""
        return self.ask({"path": str(path), "num_threads": num_threads, "use_xnnpack": use_xnnpack,
                         "unpack_packed": unpack_packed, "sha256": sha256}, path)

    def ask(self, request: dict, path) -> ProbeResult:
        """Sends one JSON request to the child and waits for its reply (or its death, or the timeout)."""
        start = time.perf_counter()
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            reply = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            self._stop()
            return ProbeResult("timeout", f"{path}: loading and running the model took over {self.timeout_s:g} s "
                               "(child process stopped)", seconds=time.perf_counter() - start)
        except (BrokenPipeError, OSError):
            reply = None  # the child died before reading the request
        seconds = time.perf_counter() - start
        if reply is not None:
            return ProbeResult(reply["status"], reply.get("message", ""), seconds=seconds)
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it closed its replies but lives on: stop it
            self._proc.kill()
            code = self._proc.wait()
        last = self._stderr_tail()
        self._stop()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else "unknown"
            what = f"signal {-code}, {name}"
        else:
            what = f"exit code {code}"
        return ProbeResult("crashed", f"{path}: crashed the TFLite interpreter in a child process ({what})"
                           + (f": {last}" if last else ""), signal=-code if code < 0 else None, seconds=seconds)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()  # the child's loop ends at EOF
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def _start(self) -> None:
        self._stop()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        self._stderr = tempfile.TemporaryFile()
        code = self.child_code.format(limit=self.memory_limit_bytes)
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, env=env)
        self.starts += 1
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=_read_replies, args=(self._proc.stdout, self._replies), daemon=True).start()

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self._stderr.close()
        self._proc = None

    def _stderr_tail(self) -> str:
        """The child's last stderr line (an abort message names the failed check), cut to one short line."""
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        lines = [line.strip() for line in self._stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return " ".join(lines[-1].split())[:200] if lines else ""


def _read_replies(stream, replies: queue.Queue) -> None:
    for line in stream:
        try:
            replies.put(json.loads(line))
        except ValueError:  # not a reply (nothing else should write here): skip it
            continue
    replies.put(None)  # EOF: the child is gone


def probe_in_child(path, num_threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True,
                   timeout_s: float = 120.0, sha256: str | None = None) -> ProbeResult:
    """Loads `path` and invokes it once on zero inputs in a child process; returns the ProbeResult.

    Raises UserError naming the file when the model cannot be loaded or run there, and when the
    child crashes ("... crashed the TFLite interpreter in a child process (signal 11, SIGSEGV)").
    """
    with ChildProbe(timeout_s=timeout_s) as probe:
        result = probe.run(path, num_threads, use_xnnpack, unpack_packed, sha256)
    if result.status != "ok":
        raise UserError(result.message)
    return result


def serve(memory_limit_bytes: int | None = None, handler=None) -> None:
    """The child's loop: one JSON request per stdin line, one JSON reply per line on the original stdout.
    `handler(**request) -> reply` (default: load and invoke the model)."""
    handler = handler or _load_and_invoke
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the interpreter prints goes to stderr, never into the replies
    sys.stdout = sys.stderr
    if memory_limit_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    for line in sys.stdin:
        request = json.loads(line)
        replies.write(json.dumps(handler(**request)) + "\n")
        replies.flush()


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or e.__class__.__name__


def _load_and_invoke(path: str, num_threads: int, use_xnnpack: bool, unpack_packed: bool,
                     sha256: str | None = None) -> dict:
    loaded = None
    try:
        data = read_tflite(path)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise UserError(f"{path}: the file changed while it was being loaded")
        loaded = open_interpreter(data, path, num_threads, use_xnnpack, unpack_packed)
        interpreter = loaded.interpreter
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            interpreter.get_tensor(detail["index"])
    except UserError as e:
        return {"status": "error", "message": str(e)}
    except Exception as e:  # noqa: BLE001 - the interpreter's own errors (RuntimeError, ValueError, MemoryError)
        runtime = loaded.runtime.name if loaded is not None else "the interpreter"
        return {"status": "error", "message": f"{path}: {runtime} cannot run this model ({_one_line(e)})"}
    return {"status": "ok"}
