"""The test run's output: other packages' deprecation notices are filtered (pyproject.toml), glimpse's
own warnings are not."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_third_party_deprecations_are_hidden_and_glimpses_warnings_shown(tmp_path):
    """PaliGemma's processor warns of numpy 2 twice per call (transformers' code, not ours): a run of its
    adapter's tests shows no warning; a glimpse warning in a test still shows."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("import warnings\nfrom glimpse import FallbackWarning\n\n"
                     "def test_warns():\n    warnings.warn('ours', FallbackWarning)\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
                           str(ROOT / "tests/models/test_paligemma_adapter.py"), "-k", "full_matrix or warns", str(probe)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "DeprecationWarning" not in done.stdout and "1 warning" in done.stdout, done.stdout[-3000:]
    assert "FallbackWarning: ours" in done.stdout
