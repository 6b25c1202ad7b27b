"""specrun as a wheel: built from this checkout, installed into a fresh virtual environment, run from a
folder outside the checkout with the commands examples/ci/github-actions.yml runs.

Offline: the fresh environment sees the project environment's dependencies (torch, the model
package…) through a .pth line, and pip installs the wheel alone (--no-deps --no-index). The .pth
line adds a path and nothing else, so the checkout's editable install is not picked up there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

RECIPE = ROOT / "examples" / "ci" / "github-actions.yml"
RESOURCES = ["runner/resources/spec.schema.json", "runner/resources/spec.base.schema.json",
             "runner/resources/summary.schema.json", "runner/resources/prices.yaml",
             "runner/tasks/classification/schema.json", "runner/tasks/extraction/schema.json",
             "runner/resources/tiktoken/cl100k_base.tiktoken", "runner/resources/tiktoken/o200k_base.tiktoken"]  # fmt: skip
CHAT = {
    "messages": [{"role": "user", "content": "Classify: stocks rally"}, {"role": "assistant", "content": "Business"}]
}


def recipe() -> tuple[dict[str, str], list[dict]]:
    """The CI job's environment and its steps."""
    (job,) = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["jobs"].values()
    return {k: str(v) for k, v in job["env"].items()}, job["steps"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the working tree (tracked and new files), not from the checkout itself,
    so no build/ or egg-info is written there and a stale build/ cannot leak old files into it."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_symlink() or source.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name, follow_symlinks=False)  # links stay links, as in a clone
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", str(src), "-w", str(dist)], capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]  # setuptools < 70.1 has no bdist_wheel: pip install -e '.[dev]'
    (built,) = dist.glob("specrun-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> dict[str, str]:
    """A fresh venv with the wheel installed by the recipe's own install step; returns its environment."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, capture_output=True)
    bin_dir = home / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    env, steps = recipe()
    env.update({k: v for k, v in os.environ.items() if k not in env})
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(home), SPECRUN=str(wheel),
               PIP_NO_INDEX="1", PIP_NO_DEPS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")  # fmt: skip
    env.pop("PYTHONPATH", None)
    (install,) = [step["run"] for step in steps if "pip install" in step.get("run", "")]
    done = subprocess.run(["bash", "-ec", install], env=env, capture_output=True, text=True, cwd=home)
    assert done.returncode == 0, done.stderr
    return env


@pytest.fixture(scope="module")
def project(venv, tmp_path_factory) -> Path:
    """A team's repository: its data and the spec `specrun init` wrote for it, nowhere near the checkout."""
    repo = tmp_path_factory.mktemp("team_repo")
    rows = [{"headline": f"{topic} headline number {i} with a few more words", "topic": topic}
            for i in range(12) for topic in ("World", "Sports", "Business")]  # fmt: skip
    (repo / "data").mkdir()
    (repo / "data" / "news.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    specrun(venv, repo, "init", "data/news.jsonl", "--out", "specs", "--name", "news")
    return repo


def specrun(env: dict[str, str], cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(["specrun", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == code, done.stderr[-3000:]
    return done


def recipe_steps(env: dict[str, str], cwd: Path, **overrides: str) -> None:
    """Every `run:` step of the recipe that calls specrun, in order, as the CI runner would."""
    env = {**env, **overrides}
    for step in recipe()[1]:
        if "specrun " in step.get("run", "") and "pip install" not in step["run"]:
            done = subprocess.run(["bash", "-ec", step["run"]], env=env, cwd=cwd, capture_output=True, text=True)
            assert done.returncode == 0, f"{step['name']}: {done.stderr[-3000:]}"


def test_the_wheel_carries_the_schema_prices_and_tokenizer_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert set(RESOURCES) <= set(names)
    for name in ("spec.schema.json", "spec.base.schema.json", "summary.schema.json"):
        schema = zipfile.ZipFile(wheel).read(f"runner/resources/{name}")
        assert schema == (ROOT / "schemas" / name).read_bytes()  # the file itself, not the link
    assert not any(name.startswith(("data/", "specs/", "tests/", "bench/")) for name in names)  # example data stays


def test_the_installed_runner_is_the_wheels_not_the_checkout(venv, tmp_path):
    where = subprocess.run(["python", "-c", "import runner; print(runner.__file__, runner.RESOURCES)"], env=venv,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert Path(venv["VIRTUAL_ENV"]) in Path(where[0]).parents
    assert ROOT not in Path(where[1]).parents


def test_init_validate_and_check_run_outside_the_checkout(venv, project, tmp_path):
    spec = project / "specs" / "news.yaml"
    assert yaml.safe_load(spec.read_text(encoding="utf-8"))["data"]["label_field"] == "topic"
    specrun(venv, project, "validate", "specs/news.yaml")
    chat = project / "chat.jsonl"
    chat.write_text(json.dumps(CHAT) + "\n", encoding="utf-8")
    done = specrun(venv, project, "check", "chat.jsonl", "--out", "checks", "--json")
    assert json.loads(done.stdout)["n_valid"] == 1  # the shipped tiktoken files and prices were found
    assert json.loads((project / "checks" / "checks.json").read_text(encoding="utf-8"))["cost"]["prices_as_of"]


@pytest.mark.model
def test_the_ci_recipe_runs_a_spec_from_the_wheel(venv, project):
    recipe_steps(venv, project, SPEC="specs/news.yaml", LIMIT="2")
    (folder,) = (project / "runs" / "news").iterdir()
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert {"zero_shot", "baseline"} <= set(metrics)
    installed = Path(venv["VIRTUAL_ENV"])
    if list(installed.rglob("runner/outputs/junit.py")):  # agent outputs' junit.xml, once it is in the package
        report = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
        (job,) = report["jobs"].values()
        (junit,) = [s["with"]["report_paths"] for s in job["steps"] if "junit" in s.get("uses", "")]
        assert list(project.glob(junit))  # the recipe's pattern finds the report the run wrote
