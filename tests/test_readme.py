from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    # both cores (pytest-xdist, in [dev]); the default run, then the heavy tests it leaves out (setup.cfg)
    command = ('pip install -e ".[dev]" && python -m pytest -q -n 2 --dist worksteal'
               ' && python -m pytest -q -n 2 --dist worksteal -m heavy')
    assert command in readme and command in ci
    assert "pytest-xdist" in (ROOT / "setup.cfg").read_text()


def test_readme_main_job_command_names_the_demo():
    assert 'pip install -e ".[dev]" && python -m tfdefakeq.demo --out runs/demo' in (ROOT / "README.md").read_text()


def test_every_model_a_readme_command_reads_is_made_by_an_earlier_command():
    import re

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Command line"):]
    block = block[:block.index("\n```\n", block.index("```bash")) ]
    made = set()
    for line in block.splitlines():
        if line.lstrip().startswith("#"):
            continue
        outputs = set(re.findall(r"--out (\S+\.tflite)", line))
        for used in re.findall(r"(models/\S+\.tflite)", line):
            assert used in made or used in outputs, f"README uses {used} before any command makes it"
        made |= outputs
    assert {"models/det_int8.tflite", "models/det_int4.tflite"} <= made


def test_readme_points_to_design_notes_in_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "shared folder" not in readme and "(docs/design.md)" in readme
    assert (ROOT / "docs" / "design.md").is_file()


def test_what_the_readme_commands_write_is_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    for path in ("/data/", "/models/", "/results/", "/runs/"):
        assert path in ignored
