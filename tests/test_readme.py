from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = 'pip install -e ".[dev]" && python -m pytest -q -n 2'  # both cores (pytest-xdist, in [dev])
    assert command in readme and command in ci
    assert "pytest-xdist" in (ROOT / "setup.cfg").read_text()


def test_readme_main_job_command_names_the_demo():
    assert 'pip install -e ".[dev]" && python -m tfdefakeq.demo --out runs/demo' in (ROOT / "README.md").read_text()
