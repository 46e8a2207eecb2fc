"""Backends arrive through the `phi_backends` entry-point group, like any third-party plugin."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DEMO = """
from phi_backends import Availability, hookimpl

class DemoBackend:
    name = "demo"
    formats = ("gguf",)
    install_hint = "pip install demo"
    model_formats = ()
    def availability(self):
        return Availability(False, "demo needs a coffee machine")
    def validate_options(self, options):
        pass
    def assess_model(self, model, platform):
        return None
    def load(self, source, options):
        raise AssertionError("never loaded")

@hookimpl
def register_backends(register):
    register(DemoBackend())
"""

BROKEN = "raise ImportError('libdemo.so: cannot open shared object file')\n"
MISSPELT = "from phi_backends import hookimpl\n\n@hookimpl\ndef register_backend(register):\n    pass\n"


def install_plugin(site: Path, dist: str, entry: str, module: str, source: str) -> None:
    """A plugin installed as pip would: a module plus a dist-info with an entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[phi_backends]\n{entry} = {module}\n")


def backends_json(site: Path, **env: str) -> list[dict[str, object]]:
    code = "from phi_backends.cli.main import main; main(['backends', '--json'])"
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    install_plugin(tmp_path, "demo_plugin", "demo", "phi_demo_plugin", DEMO)
    install_plugin(tmp_path, "broken_plugin", "broken", "phi_broken_plugin", BROKEN)
    install_plugin(tmp_path, "misspelt_plugin", "misspelt", "phi_misspelt_plugin", MISSPELT)
    return tmp_path


def test_third_party_plugin_is_found_and_says_why_it_cannot_run(site: Path) -> None:
    rows = {row["name"]: row for row in backends_json(site)}
    assert rows["demo"]["installed"] and not rows["demo"]["available"]
    assert rows["demo"]["reason"] == "demo needs a coffee machine"


def test_a_broken_plugin_is_reported_not_fatal(site: Path) -> None:
    rows = {row["name"]: row for row in backends_json(site)}
    assert "libdemo.so" in str(rows["broken"]["reason"])
    assert "does not define" in str(rows["misspelt"]["reason"])
    assert rows["demo"]["installed"], "the other plugins still load"


def test_block_list_environment_variable(site: Path) -> None:
    names = {row["name"] for row in backends_json(site, PHI_BACKENDS_BLOCK_PLUGINS="demo, broken") if row["installed"]}
    assert "demo" not in names and "broken" not in names


ROOT = Path(__file__).resolve().parents[1]  # the checkout the core session installs from


def backend_errors(site: Path, names: list[str]) -> dict[str, str]:
    """What ``plugins.get_backend`` says for each name, in a fresh process that sees ``site``."""
    code = textwrap.dedent(
        f"""
        from phi_backends import plugins, errors
        for name in {names!r}:
            try:
                plugins.get_backend(name)
                print(name, "ok")
            except errors.PhiBackendsError as exc:
                print(name, type(exc).__name__, exc.exit_code, exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def test_unknown_and_broken_backends(site: Path) -> None:
    lines = backend_errors(site, ["demo", "dmeo", "broken"])
    assert lines["demo"] == "ok"
    assert lines["dmeo"].startswith("UnknownBackendError 2") and "did you mean 'demo'" in lines["dmeo"]
    assert lines["broken"].startswith("BackendUnavailableError 1") and "failed to load" in lines["broken"]


def test_known_backend_not_installed_names_its_extra(site: Path) -> None:
    # The core session installs no backend. In a shared dev environment with every plugin
    # installed there is no missing backend to ask for (under --require-engines this skip fails).
    if importlib.util.find_spec("phi_backends_onnx") is not None:
        pytest.skip("phi-backends-onnx is installed here; the core session's environment has no backend")
    lines = backend_errors(site, ["onnx"])
    # the plugins are not on the package index: the hint is the plugin's folder in this checkout
    assert lines["onnx"].startswith("BackendUnavailableError 1") and "-m pip install -e " in lines["onnx"]
    assert lines["onnx"].endswith(str(ROOT / "plugins" / "onnx")), lines["onnx"]
