"""CI's guarantee: under --require-engines a test that would skip fails instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_skip_fails_under_require_engines(tmp_path: Path) -> None:
    (tmp_path / "test_skip.py").write_text(
        "import pytest\n\ndef test_engine():\n    pytest.importorskip('an_engine_that_is_not_installed')\n"
    )
    base = [sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    env = {"PYTHONPATH": str(ROOT)}
    lenient = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path, env=env)
    strict = subprocess.run([*base, "--require-engines"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert lenient.returncode == 0 and "1 skipped" in lenient.stdout
    assert strict.returncode == 1 and "1 failed" in strict.stdout and "an_engine_that_is_not_installed" in strict.stdout
