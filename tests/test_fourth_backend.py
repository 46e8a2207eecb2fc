"""A fourth backend, with a format of its own, added from outside the core with no core edit.

The ``tape`` plugin below is installed the way pip installs any plugin (a module and a dist-info
with an entry point in the ``phi_backends`` group, on ``sys.path``). It declares its own format
(``.tape`` files), rates itself, checks its options and loads models with the testing kit's
:class:`~phi_backends.testing.ScriptedEngine`. Nothing in ``phi_backends`` names it: the test
checks that too. It is then listed, explained, chosen, configured and run, through the real CLI
in subprocesses and through the API, and it passes the whole contract suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phi_backends as pb
from phi_backends import plugins
from phi_backends.errors import OptionError
from phi_backends.testing import SCRIPT_TEXT, BackendContract, ContractModels, write_script_model
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli
from tests.test_plugins import install_plugin

CORE = Path(pb.__file__).parent

TAPE_PLUGIN = '''
"""A backend for .tape files: script models under another name, read by the kit's ScriptedEngine."""
from dataclasses import dataclass
from pathlib import Path

from phi_backends import Availability, Fit, ModelFormat, Verdict, hookimpl
from phi_backends.errors import OptionError
from phi_backends.formats.engine_options import option_values
from phi_backends.testing import ScriptedEngine

TAPE = ModelFormat(
    name="tape",
    description="a tape file",
    plural="tape files",
    key="ending in .tape",
    detect=lambda path: path.is_file() and path.suffix == ".tape",
    hub_suffix=".tape",
)


@dataclass(frozen=True)
class TapeOptions:
    speed: float = 1.0  # how fast the tape plays: 1.0 plays without pauses

    @classmethod
    def parse(cls, options):
        parsed = cls(**option_values(cls, options, backend="tape"))
        if not parsed.speed > 0:
            raise OptionError(f"speed must be above 0, got {parsed.speed}")
        return parsed


class TapeBackend:
    name = "tape"
    formats = ("tape",)
    install_hint = "pip install phi-tape"
    model_formats = (TAPE,)

    def availability(self):
        return Availability(True, "tapes play anywhere", ("cpu",))

    def validate_options(self, options):
        TapeOptions.parse(options)

    def assess_model(self, model, platform):
        return Verdict("tape", Fit.BEST, "tapes play best on a tape deck") if model.offers(self.formats) else None

    def load(self, source, options):
        speed = TapeOptions.parse(options).speed
        return ScriptedEngine(source.path, delay=0.0 if speed == 1.0 else 0.001 / speed)


@hookimpl
def register_backends(register):
    register(TapeBackend())
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    install_plugin(folder, "phi_tape", "tape", "phi_tape_plugin", TAPE_PLUGIN)
    return folder


@pytest.fixture(scope="module")
def tapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tapes")
    return {kind: write_script_model(folder / f"{kind}.tape", kind) for kind in ("tiny_phi3", "smollm2")}


@pytest.fixture(scope="module")
def installed(site: Path) -> Iterator[None]:
    """The tape plugin on sys.path for this process too, found through its entry point."""
    sys.path.insert(0, str(site))
    plugins.reset()
    yield
    sys.path.remove(str(site))
    plugins.reset()


def tape_cli(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``phi-backends *args`` with the tape plugin installed; in ``cwd`` (its project), if given."""
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    if cwd is None:
        return run_cli(*args, env=env)
    env["PHI_BACKENDS_CONFIG"] = str(cwd / "user.toml")
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        return run_cli(*args, env=env)
    finally:
        os.chdir(previous)


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_no_core_module_names_the_fourth_backend_or_its_format() -> None:
    for path in CORE.rglob("*.py"):
        assert "tape" not in path.read_text(encoding="utf-8").lower(), f"{path} names the tape backend"


def test_it_is_listed(site: Path) -> None:
    row = next(r for r in json_out(tape_cli(site, "backends", "--json")) if r["name"] == "tape")
    assert row["installed"] and row["available"] and row["formats"] == ["tape"]


def test_it_is_explained_and_chosen_for_its_format(site: Path, tapes: dict[str, Path]) -> None:
    found = json_out(tape_cli(site, "backends", "--explain", str(tapes["tiny_phi3"]), "--json"))
    assert found["formats"] == ["tape"] and found["chosen"] == "tape"
    tape = next(row for row in found["backends"] if row["backend"] == "tape")
    assert tape["rank"] == 1 and tape["fit"] == "best" and tape["reason"] == "tapes play best on a tape deck"
    others = [row for row in found["backends"] if row["backend"] != "tape" and row["installed"]]
    assert all(row["rank"] is None and "is a tape file" in row["reason"] for row in others), others


def test_it_runs_from_the_cli_by_path_and_by_catalogue_entry(
    site: Path, tapes: dict[str, Path], tmp_path: Path
) -> None:
    result = json_out(tape_cli(site, "run", "--model", str(tapes["tiny_phi3"]), "--temperature", "0", "--json"))
    assert result["backend"] == "tape" and result["text"] == SCRIPT_TEXT and result["finish_reason"] == "stop"
    # a user's catalogue entry may name the new format as a key, like gguf/onnx/mlx
    (tmp_path / "phi-backends.toml").write_text(
        f'model = "my-tape"\n[models.my-tape]\ntape = {{ path = "{tapes["tiny_phi3"]}" }}\n'
    )
    assert json_out(tape_cli(site, "run", "--temperature", "0", "--json", cwd=tmp_path))["text"] == SCRIPT_TEXT


def test_it_is_configured_and_its_options_checked(site: Path, tapes: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "phi-backends.toml").write_text(
        f'model = "{tapes["tiny_phi3"]}"\nbackend = "tape"\n[tape]\nspeed = 2.0\n'
    )
    settings = json_out(tape_cli(site, "config", "--json", cwd=tmp_path))["settings"]
    speed = settings["tape.speed"]
    assert speed["value"] == 2.0 and speed["origin"]["layer"] == "project"
    assert json_out(tape_cli(site, "run", "--temperature", "0", "--json", cwd=tmp_path))["text"] == SCRIPT_TEXT

    (tmp_path / "phi-backends.toml").write_text(f'model = "{tapes["tiny_phi3"]}"\n[tape]\nsped = 2.0\n')
    result = tape_cli(site, "run", cwd=tmp_path)
    expect_cli_error(
        result, 2, "phi-backends.toml", "sped", "speed", what="a fourth backend's unknown option in a config file"
    )


def test_it_is_chosen_by_load_and_checks_options(installed: None, tapes: dict[str, Path]) -> None:
    with pb.load(str(tapes["tiny_phi3"])) as gen:
        assert gen.backend == "tape"
        assert gen.generate("Write a haiku about ice hockey", pb.SamplingConfig(temperature=0)).text == SCRIPT_TEXT
    with pytest.raises(OptionError) as caught:
        pb.load(str(tapes["tiny_phi3"]), speed=0)
    expect_api_error(caught.value, OptionError, "speed must be above 0", what="a fourth backend's bad option value")
    with pytest.raises(OptionError) as caught:
        pb.load(str(tapes["tiny_phi3"]), backend="tape", sped=2.0)
    expect_api_error(caught.value, OptionError, "sped", "speed", what="a fourth backend's unknown option")


class TestTapeContract(BackendContract):
    """The whole contract suite on the fourth backend, found through its entry point."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_models(cls, installed: None, tapes: dict[str, Path]) -> ContractModels:
        return ContractModels(backend="tape", tiny_phi3=tapes["tiny_phi3"], smollm2=tapes["smollm2"])
