"""Metadata lives in setup.cfg. This file adds one build step: the shipped models.

The detectors in `tflite_models/` (and their manifests) stay there in the repository, where tests,
benchmarks and CI read them; a built wheel carries copies in `tfdefakeq/_shipped/`, so a non-editable
install (Colab's `pip install git+...`, a Pi) finds them through `tfdefakeq.shipped_model(name)`.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED_SUFFIXES = (".tflite", ".manifest.json")


class BuildPyWithModels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads tflite_models/ in place
            return
        source = HERE / "tflite_models"
        target = Path(self.build_lib) / "tfdefakeq" / "_shipped"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.name.endswith(SHIPPED_SUFFIXES) or path.name == "README.md":
                shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithModels})
