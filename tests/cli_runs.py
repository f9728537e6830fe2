"""Running the command line in tests: as a user does (a separate process), or in-process (fast)."""

import os
import subprocess
import sys


def run_process(*args, cwd, env=None):
    """As a user runs it: a separate process (offline; `env` adds variables)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "glimpse.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def run(*args, cwd):
    """In-process (fast) for the many error cases; `returncode` as a process's."""
    from typer.testing import CliRunner

    from glimpse.cli import app

    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)
    result.returncode = result.exit_code
    return result
