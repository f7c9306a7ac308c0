"""What the code imports is what setup.cfg declares: the runtime's imports in the core install or
[edge] (a Pi installs only those), every other import in some extra."""

import ast
import configparser
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_TO_DIST = {  # import name -> distribution name
    "numpy": "numpy", "PIL": "pillow", "ai_edge_litert": "ai-edge-litert", "flatbuffers": "flatbuffers", "av": "av",
    "tqdm": "tqdm", "h5py": "h5py", "scipy": "scipy", "pandas": "pandas", "matplotlib": "matplotlib",
    "tensorflow": "tensorflow", "tf_keras": "tf-keras", "tensorflow_model_optimization": "tensorflow-model-optimization",
    "ai_edge_quantizer": "ai-edge-quantizer", "sklearn": "scikit-learn", "skimage": "scikit-image", "pywt": "pywavelets",
    "nbformat": "nbformat", "nbclient": "nbclient", "pytest": "pytest", "tabulate": "tabulate",
    "safetensors": "safetensors", "filelock": "filelock",
}
OPTIONAL_IN_RUNTIME = {"tqdm"}  # imported under try/except ImportError: a progress counter stands in


def _imports(files) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("tfdefakeq", "tests", "benchmarks") \
                        and not (ROOT / "ci" / f"{top}.py").exists():  # the CI scripts tests import by path
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def _declared() -> dict[str, set[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    groups = {"install_requires": cfg["options"]["install_requires"], **dict(cfg["options.extras_require"])}
    return {group: {re.split(r"[<>=!~\[; ]", line.strip())[0].lower() for line in text.splitlines()
                    if line.strip() and not line.strip().startswith("#")}
            for group, text in groups.items()}


def test_every_runtime_import_is_in_the_edge_install():
    declared = _declared()
    edge = declared["install_requires"] | declared["edge"] | declared["video"]
    for name, files in _imports(sorted((ROOT / "tfdefakeq" / "runtime").glob("*.py"))).items():
        assert name in IMPORT_TO_DIST, f"{name} (imported by {files[0]}): add it to IMPORT_TO_DIST and setup.cfg"
        if name not in OPTIONAL_IN_RUNTIME:
            assert IMPORT_TO_DIST[name] in edge, f"{name} is imported by the runtime ({files[0]}) but not in [edge]"


def test_every_import_is_declared_somewhere():
    declared = set().union(*_declared().values())
    # tests/fixtures/make_*.py run once, where their heavy tools are (torch), never in an install;
    # benchmarks/peers/*.py run in the environment benchmarks/quant_methods.py makes for them (MCT_PACKAGES)
    files = [p for d in ("tfdefakeq", "tests", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))
             if not {"fixtures", "peers"} & set(p.relative_to(ROOT).parts)]
    for name, users in _imports(files).items():
        assert name in IMPORT_TO_DIST, f"{name} (imported by {users[0]}): add it to IMPORT_TO_DIST and setup.cfg"
        assert IMPORT_TO_DIST[name] in declared, f"{name} is imported ({users[0]}) but declared in no extra"
