"""The load of the machine while a benchmark ran, measured, for its report header."""

from __future__ import annotations

import os
import threading


class LoadSampler:
    """Samples the 1-minute load average (`os.getloadavg`) every `every_s` seconds in a daemon thread,
    from `start()` to `stop()`, once at each end included. `sentence()` states what was measured."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "LoadSampler":
        self.samples.append(os.getloadavg()[0])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> "LoadSampler":
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(os.getloadavg()[0])
        return self

    def sentence(self, cpus: int | None = None) -> str:
        return load_sentence(self.samples, cpus or os.cpu_count() or 1, self.every_s)


def load_sentence(samples: list[float], cpus: int, every_s: float) -> str:
    """One sentence from the samples: their range and median against the CPU count."""
    if not samples:
        return "load average not sampled"
    ordered = sorted(samples)
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    verdict = (f"above the {cpus} CPUs for part of the run: other work competed, absolute times are inflated, "
               "same-run ratios are what to read" if ordered[-1] > cpus else
               f"within the {cpus} CPUs throughout")
    return (f"1-minute load average sampled {len(samples)} times (every {every_s:g} s): min {ordered[0]:.2f}, "
            f"median {median:.2f}, max {ordered[-1]:.2f}; {verdict}")
