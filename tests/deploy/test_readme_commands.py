"""The README's "Two commands" work on a stock Debian/Ubuntu Python: a virtualenv first, Python >= 3.11."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def two_commands_section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]


def test_run_command_installs_into_a_virtualenv_and_names_the_python_it_needs():
    section = two_commands_section()
    run = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    assert run.index("python3 -m venv .venv") < run.index(". .venv/bin/activate") < run.index("pip install -e .")
    assert "gateway serve --demo" in run
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11" and "Python ≥ 3.11" in section and "python3-venv" in section


def test_test_script_refuses_a_python_older_than_3_11_with_a_clear_line(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n"
                    "if [ \"$1\" = -V ]; then echo 'Python 3.9.2'; exit 0; fi\n"
                    "exit 1\n")  # `sys.exit(sys.version_info < (3, 11))` is true on 3.9
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "test.sh")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "needs Python >= 3.11 (python3 is Python 3.9.2)" in result.stderr
