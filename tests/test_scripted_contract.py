"""The backend contract on the testing kit's own backend: script models on ScriptedEngine.

No engine is needed, so the core's tests run the whole contract (the Generator's lifecycle:
cancel, close, threads, seeds) on every Python of the matrix. The real plugins are hidden, as
in tests/test_choice.py, so that ``backend="scripted"`` is found through the plugin manager
exactly as a third-party plugin would be.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_backends import plugins
from phi_backends.testing import BackendContract, ContractModels, ScriptedPlugin, write_script_model

#: The same registration in a child process the contract starts (its own scripts).
CHILD_SETUP = (
    "from phi_backends import plugins; from phi_backends.testing import ScriptedPlugin; "
    "plugins.plugin_manager().register(ScriptedPlugin(), name='test-scripted')"
)


@pytest.fixture(scope="class")
def scripted_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The scripted backend registered on a fresh plugin manager without the real ones, and no
    config file or PHI_BACKENDS_* variable, for the whole class (its Generators are class-scoped)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("PHI_BACKENDS_")]:
            patch.delenv(name)
        patch.setenv("PHI_BACKENDS_CONFIG", os.devnull)
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        patch.setenv(plugins.BLOCK_ENV, ",".join(plugins.KNOWN_BACKENDS))
        plugins.reset()
        manager = plugins.plugin_manager()
        manager.register(ScriptedPlugin(), name="test-scripted")
        manager.check_pending()
        yield
    plugins.reset()


def script_models(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> ContractModels:
    folder: Path = tmp_path_factory.mktemp("script-models")
    return ContractModels(
        backend="scripted",
        tiny_phi3=write_script_model(folder / "tiny-phi3.json", "tiny_phi3"),
        smollm2=write_script_model(folder / "smollm2.json", "smollm2"),
        options=options,
        child_setup=CHILD_SETUP,
    )


class TestScriptedContract(BackendContract):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_models(cls, scripted_only: None, tmp_path_factory: pytest.TempPathFactory) -> ContractModels:
        return script_models(tmp_path_factory)


class TestScriptedReaderStepsContract(BackendContract):
    """The whole contract again on one sequence that a reader steps on its own thread, as
    onnxruntime-genai is (``Capacity.any_thread``): the scheduler's second way of running calls."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_models(cls, scripted_only: None, tmp_path_factory: pytest.TempPathFactory) -> ContractModels:
        return script_models(tmp_path_factory, max_sequences=1, any_thread=True)
