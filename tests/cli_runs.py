"""Running the command line in tests: as a user does (a separate process), or in-process (fast)."""

import os
import subprocess
import sys
from types import SimpleNamespace


def run_process(*args, cwd, env=None):
    """As a user runs it: a separate process (offline; `env` adds variables)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "glimpse.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def run(*args, cwd):
    """In-process (fast) for the many error cases, through `glimpse.cli.main` as the installed command
    runs it (a GlimpseError escaping a command becomes one line and exit 2). `returncode` is the
    process's would-be status; `exception` an exception that escaped main."""
    from typer.testing import CliRunner

    from glimpse.cli import main

    old_dir, old_argv, exception = os.getcwd(), sys.argv, None
    with CliRunner().isolation() as (stdout, stderr, output):
        os.chdir(cwd)
        sys.argv = ["glimpse", *args]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except Exception as exc:  # a crash: the test shows it
            exception, code = exc, 1
        finally:
            os.chdir(old_dir)
            sys.argv = old_argv
            sys.stdout.flush()
            sys.stderr.flush()
        text = {name: stream.getvalue().decode() for name, stream in
                (("stdout", stdout), ("stderr", stderr), ("output", output))}
    return SimpleNamespace(returncode=code, exit_code=code, exception=exception, **text)
