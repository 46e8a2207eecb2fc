"""From what a user types to model files: paths, catalogue names, user entries, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi_backends import ModelFormatError, ModelNotFoundError, UnknownModelError, UsageError
from phi_backends.models import catalogue, detect_format, find_entry, package_file, resolve
from phi_backends.models.catalogue import BUILTIN_CATALOGUE
from tests.bad_inputs import expect_api_error

SMOL = package_file(BUILTIN_CATALOGUE["smollm2-135m-instruct"].artifacts["gguf"])


def test_offline_model_resolves_from_its_package() -> None:
    assert SMOL is not None and SMOL.is_file()
    source = resolve("smollm2", formats=("gguf",))
    assert source.path == SMOL and source.template is None and source.name == "smollm2-135m-instruct"


def test_local_paths_and_their_formats(tmp_path: Path) -> None:
    assert SMOL is not None
    assert resolve(str(SMOL), formats=("gguf",)).format == "gguf"
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "genai_config.json").write_text("{}")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    assert detect_format(tmp_path / "onnx") == "onnx"
    assert detect_format(tmp_path / "hf") == "mlx"
    with pytest.raises(UsageError) as info:
        resolve(str(tmp_path / "onnx"), formats=("gguf",))
    expect_api_error(
        info.value,
        UsageError,
        "ONNX Runtime GenAI folder, which this backend does not read",
        what="an ONNX folder for a backend that reads GGUF files only",
    )


def test_catalogue_covers_the_phi_family_with_templates() -> None:
    for name, template in [
        ("phi-3-mini-4k-instruct", "phi3"),
        ("phi-3-mini-128k-instruct", "phi3"),
        ("phi-3.5-mini-instruct", "phi3.5"),
        ("phi-4-mini-instruct", "phi4-mini"),
        ("phi-4", "phi4"),
    ]:
        entry = find_entry(name)
        assert entry is not None and entry.template == template and "gguf" in entry.artifacts
    seed = BUILTIN_CATALOGUE["phi-3-mini-4k-instruct"].artifacts["gguf"]
    assert (seed.repo, seed.filename) == ("microsoft/Phi-3-mini-4k-instruct-gguf", "Phi-3-mini-4k-instruct-q4.gguf")
    assert find_entry("PHI-3") is find_entry("phi-3-mini-4k-instruct") or find_entry("PHI-3") == find_entry("phi3")


@pytest.mark.parametrize(
    ("what", "model", "error", "needle"),
    [
        ("a relative .gguf path that does not exist", "./nope.gguf", ModelNotFoundError, "no such file"),
        ("an absolute .gguf path that does not exist", "/definitely/missing/model.gguf", ModelNotFoundError,
         "no such file"),
        ("a misspelt catalogue name", "phi-3-mini-4k-instrct", UnknownModelError,
         "did you mean phi-3-mini-4k-instruct"),
        ("a model name that is no path, catalogue name or hub id", "gpt-5", UnknownModelError,
         "unknown model 'gpt-5'"),
    ],
)  # fmt: skip
def test_resolution_errors(what: str, model: str, error: type[UsageError], needle: str) -> None:
    with pytest.raises(error) as info:
        resolve(model, formats=("gguf",))
    expect_api_error(info.value, error, needle, what=what)


def test_folder_that_is_no_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFormatError) as info:
        resolve(str(tmp_path), formats=("gguf",))
    expect_api_error(info.value, ModelFormatError, "not a model folder", what="a folder with no model files in it")


def test_catalogue_entry_without_the_backends_format() -> None:
    with pytest.raises(UsageError) as info:
        resolve("smollm2", formats=("onnx",))
    what = "a catalogue model with no artifact in the backend's format (smollm2 for onnx)"
    expect_api_error(info.value, UsageError, "no onnx artifact for smollm2-135m-instruct", what=what)


def test_user_catalogue_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SMOL is not None
    config = tmp_path / "config.toml"
    config.write_text(f'[models.my-smol]\ngguf = {{ path = "{SMOL}" }}\ntemplate = "chatml"\naliases = ["ms"]\n')
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(config))
    assert "my-smol" in catalogue()
    source = resolve("ms", formats=("gguf",))
    assert source.path == SMOL and source.template == "chatml"


@pytest.mark.parametrize(
    ("what", "text", "needle"),
    [
        ("a [models.NAME] entry with a misspelt key (ggfu)", "[models.x]\nggfu = 'a/b/c.gguf'\n", "unknown key 'ggfu'"),
        ("a [models.NAME] entry naming no model file", "[models.x]\ntemplate = 'phi3'\n", "needs at least one of gguf"),
        ("a config file that is not valid TOML", "[models.x\n", "cannot read config file"),
        ("a [models.NAME] entry with gguf = 3", "[models.x]\ngguf = 3\n", "must be a string or a table"),
    ],
)
def test_bad_user_config_names_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, text: str, needle: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(config))
    with pytest.raises(UsageError) as info:
        catalogue()
    expect_api_error(info.value, UsageError, needle, str(config), what=what, surface="config")
