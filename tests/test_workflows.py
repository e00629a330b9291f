"""The Apple-silicon CI workflow runs exactly the README's commands, so it cannot rot silently.

Nothing here runs the workflow (that needs GitHub's macOS runners); it reads
``.github/workflows/macos.yml`` with PyYAML and compares its commands with the README's.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "macos.yml"
ACTIVATE = ". .venv/bin/activate && "


def readme_commands(section: str) -> list[str]:
    """Return the command lines (comments dropped) of the bash blocks in a README section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        lines += [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    return lines


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    [job] = workflow["jobs"].values()
    return job["steps"]


def commands(steps: list[dict]) -> list[str]:
    return [step["run"].strip() for step in steps if "run" in step]


def test_it_runs_on_every_push_on_an_apple_silicon_runner(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "push" in triggers
    [job] = workflow["jobs"].values()
    assert job["runs-on"] in ("macos-14", "macos-15"), "GitHub's arm64 (M1) macOS images"


def test_its_first_command_is_the_readmes_set_up_and_whole_suite(steps):
    [setup] = [line for line in readme_commands("Set up") if '".[dev]"' in line]
    [whole_suite] = [line for line in readme_commands("Tests") if line == "python -m pytest -q"]
    assert setup.endswith(f"&& {whole_suite}")
    assert commands(steps)[0] == setup


def test_the_gpu_tier_is_the_readmes_command_in_the_readmes_environment(steps):
    [gpu_tier] = [line for line in readme_commands("Tests") if "MLX_INCEPTION_TEST_DEVICE" in line]
    assert "MLX_INCEPTION_TEST_DEVICE=gpu" in shlex.split(gpu_tier)
    assert ACTIVATE + gpu_tier in commands(steps)


def test_the_benchmark_runs_one_round_and_its_json_is_kept(steps):
    [bench] = [c for c in commands(steps) if "mlx-inception bench" in c]
    assert bench.startswith(ACTIVATE + "mlx-inception bench --rounds 1 ")
    arguments = shlex.split(bench.removeprefix(ACTIVATE))
    output = arguments[arguments.index("--output") + 1]
    [upload] = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == output
    assert steps.index(upload) > max(i for i, s in enumerate(steps) if s.get("run") == bench)


def test_every_later_command_runs_in_the_environment_the_first_one_made(steps):
    later = commands(steps)[1:]
    assert later and all(c.startswith(ACTIVATE) for c in later)
    # Steps after a failed one still run, so one failing test does not hide the GPU results.
    for step in steps[steps.index(next(s for s in steps if "run" in s)) + 1:]:
        assert "cancelled()" in step.get("if", ""), step.get("name")
