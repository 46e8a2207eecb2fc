"""From what a user types to model files: paths, catalogue names, user entries, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi_backends import ModelFormatError, ModelNotFoundError, UnknownModelError, UsageError
from phi_backends.catalogue import BUILTIN_CATALOGUE
from phi_backends.models import catalogue, detect_format, find_entry, package_file, resolve

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
    with pytest.raises(UsageError, match="ONNX Runtime GenAI folder, which this backend does not read"):
        resolve(str(tmp_path / "onnx"), formats=("gguf",))


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
    ("model", "error", "needle"),
    [
        ("./nope.gguf", ModelNotFoundError, "no such file"),
        ("/tmp/definitely/missing/model.gguf", ModelNotFoundError, "no such file"),
        ("phi-3-mini-4k-instrct", UnknownModelError, "did you mean phi-3-mini-4k-instruct"),
        ("gpt-5", UnknownModelError, "unknown model 'gpt-5'"),
    ],
)
def test_resolution_errors(model: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        resolve(model, formats=("gguf",))


def test_folder_that_is_no_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFormatError, match="not a model folder"):
        resolve(str(tmp_path), formats=("gguf",))


def test_catalogue_entry_without_the_backends_format() -> None:
    with pytest.raises(UsageError, match="no onnx artifact for smollm2-135m-instruct"):
        resolve("smollm2", formats=("onnx",))


def test_user_catalogue_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SMOL is not None
    config = tmp_path / "config.toml"
    config.write_text(f'[models.my-smol]\ngguf = {{ path = "{SMOL}" }}\ntemplate = "chatml"\naliases = ["ms"]\n')
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(config))
    assert "my-smol" in catalogue()
    source = resolve("ms", formats=("gguf",))
    assert source.path == SMOL and source.template == "chatml"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[models.x]\nggfu = 'a/b/c.gguf'\n", "unknown key 'ggfu'"),
        ("[models.x]\ntemplate = 'phi3'\n", "needs at least one of gguf"),
        ("[models.x\n", "cannot read config file"),
        ("[models.x]\ngguf = 3\n", "must be a string or a table"),
    ],
)
def test_bad_user_config_names_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(config))
    with pytest.raises(UsageError, match=needle) as info:
        catalogue()
    assert str(config) in str(info.value)
