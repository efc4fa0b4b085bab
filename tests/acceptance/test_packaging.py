"""The wheel carries the SQL files: `soleil-runner migrate` works from an
installed package, run outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, text=True, capture_output=True, timeout=90
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


@pytest.mark.slow
def test_installed_wheel_migrates_outside_the_checkout(tmp_path: Path, empty_database_url: str) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # No build isolation: hatchling comes with the dev extras, so this needs no network.
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", ROOT, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("soleil-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)
    # The dependencies come from the test venv's site-packages, added as a plain path:
    # its .pth files (the editable install of this checkout among them) are not read.
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    (Path(site.stdout.strip()) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "SOLEIL_APP"}}
    env["SOLEIL_DATABASE_URL"] = empty_database_url
    where = run(python, "-c", "import soleil.runner.queries as q; print(q.sql_root())", cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    first = run(venv / "bin" / "soleil-runner", "migrate", cwd=tmp_path, env=env)
    assert first.stdout.startswith("Applied migrations: 0001")
    again = run(venv / "bin" / "soleil-runner", "migrate", cwd=tmp_path, env=env)
    assert again.stdout.startswith("Schema is up to date")
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('soleil.jobs') IS NOT NULL").fetchone() == (True,)
