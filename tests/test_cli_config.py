"""`phi-backends config`, and config errors on the command line: real processes, real files.

No engine is needed (the core session has none): `run` is only driven here as far as a config
error, which is reported before any backend is looked at.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from phi_backends import plugins
from phi_backends.config import resolve
from phi_backends.models.catalogue import DEFAULT_MODEL
from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@pytest.fixture(autouse=True)
def project(config_project: Path) -> Path:
    """Every test here runs in an empty project folder, with no user config (conftest.py)."""
    return config_project


@pytest.fixture
def user(tmp_path: Path) -> Path:
    return tmp_path / "user.toml"


def config(*args: str, env: dict[str, str] | None = None) -> str:
    result = run_cli("config", *args, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_defaults_only(project: Path, user: Path) -> None:
    out = config()
    assert f'model = "{DEFAULT_MODEL}"' in out
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if "=" in line and not line.startswith("#")}
    assert lines["model"].endswith("# default")
    assert lines["temperature"].startswith("temperature = 1.0") and lines["temperature"].endswith("# default")
    assert f"# project file: {project / 'phi-backends.toml'} (not found)" in out
    assert f"# user file: {user} (not found)" in out


def test_every_value_says_where_it_came_from(project: Path, user: Path) -> None:
    user.write_text('template = "chatml"\n[sampling]\ntop_k = 40\ntemperature = 0.5\n')
    (project / "phi-backends.toml").write_text(
        'backend = "onnx"\nbackends = ["onnx", "llama-cpp"]\n[sampling]\ntemperature = 0.2\n[onnx]\nthreads = 2\n'
    )
    data = json.loads(config("--json", "--max-tokens", "7", "--stop", "##", env={"PHI_BACKENDS_MODEL": "smollm2"}))
    settings = data["settings"]
    project_file = str(project / "phi-backends.toml")

    def origin(key: str) -> dict[str, str]:
        return dict(settings[key]["origin"])

    assert settings["model"]["value"] == "smollm2"
    assert origin("model") == {"layer": "env", "where": "PHI_BACKENDS_MODEL"}
    assert settings["backend"]["value"] == "onnx"
    assert origin("backend") == {"layer": "project", "where": project_file, "key": "backend"}
    assert settings["backends"]["value"] == ["onnx", "llama-cpp"]
    assert settings["template"]["value"] == "chatml"
    assert origin("template") == {"layer": "user", "where": str(user), "key": "template"}
    assert settings["sampling.temperature"]["value"] == 0.2 and origin("sampling.temperature")["layer"] == "project"
    assert settings["sampling.top_k"]["value"] == 40 and origin("sampling.top_k")["layer"] == "user"
    assert settings["sampling.max_tokens"]["value"] == 7
    assert origin("sampling.max_tokens") == {"layer": "flag", "where": "--max-tokens"}
    assert settings["sampling.stop"]["value"] == ["##"]
    assert settings["sampling.top_p"] == {"value": None, "origin": {"layer": "default"}}
    assert settings["onnx.threads"] == {
        "value": 2,
        "origin": {"layer": "project", "where": project_file, "key": "onnx.threads"},
    }
    assert data["precedence"] == ["flag", "env", "project", "user", "default"]
    assert [(f["layer"], f["status"]) for f in data["files"]] == [("project", "in use"), ("user", "in use")]


def test_text_output_is_toml_that_gives_the_same_config(project: Path, user: Path) -> None:
    """What `config` prints can be saved as a project file: it is TOML, and it means the same."""
    user.write_text('[sampling]\ntop_k = 40\n[models.mine]\ngguf = "/models/mine.gguf"\n')
    (project / "phi-backends.toml").write_text(
        'model = "smollm2"\nbackends = ["mlx"]\nplatform = "linux-cuda"\n'
        '[sampling]\ntemperature = 0.0\nstop = ["\\n\\n", "\\"end\\""]\n'
        '[llama-cpp]\nn_ctx = 2048\nflash_attn = true\n[onnx.provider_options]\ndevice_id = "0"\n'
    )
    out = config("--top-p", "0.9")
    written = tomllib.loads(out)
    assert written["model"] == "smollm2" and written["backends"] == ["mlx"] and written["platform"] == "linux-cuda"
    assert written["sampling"] == {
        "temperature": 0.0,
        "top_k": 40,
        "top_p": 0.9,
        "repeat_penalty": 1.2,
        "repeat_last_n": 64,
        "max_tokens": 100,
        "stop": ["\n\n", '"end"'],
        "logit_bias": [],
        "logprobs": False,
        "top_logprobs": 0,
    }
    assert written["llama-cpp"] == {"n_ctx": 2048, "flash_attn": True}
    assert written["onnx"] == {"provider_options": {"device_id": "0"}}
    assert written["models"]["mine"]["gguf"] == "/models/mine.gguf"
    # Saved as the project file (with no user file and no flags), it is the same effective config.
    before = resolve({"sampling.top_p": ("--top-p", 0.9)})
    user.unlink()
    (project / "phi-backends.toml").write_text(out)
    after = resolve()
    assert {k: s.value for k, s in after.settings.items()} == {k: s.value for k, s in before.settings.items()}


def test_files_lists_what_was_looked_at_in_precedence_order(project: Path, user: Path) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "app"\n')
    lines = config("--files").splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["project", str(project / "phi-backends.toml")],
        ["project", str(project / "pyproject.toml")],
        ["user", str(user)],
    ]
    assert lines[0].endswith("not found") and lines[1].endswith("no [tool.phi-backends] table")
    (project / "pyproject.toml").write_text('[tool.phi-backends]\nmodel = "smollm2"\n')
    rows = json.loads(config("--files", "--json"))
    assert rows[0] == {
        "layer": "project",
        "path": str(project / "pyproject.toml"),
        "table": "tool.phi-backends",
        "found": True,
        "status": "in use",
    }


def test_flags_are_checked_like_config_values() -> None:
    result = run_cli("config", "--backend", "lama-cpp", timeout=60)
    expect_cli_error(
        result,
        2,
        "flag --backend: unknown backend 'lama-cpp'",
        "did you mean 'llama-cpp'?",
        what="config --backend lama-cpp",
    )
    result = run_cli("config", "--temperature", "-1", timeout=60)
    expect_cli_error(result, 2, "temperature must be >= 0", what="config --temperature -1")


@pytest.mark.parametrize("command", ["config", "run"])
def test_a_bad_file_stops_every_command_with_one_line(project: Path, command: str) -> None:
    (project / "phi-backends.toml").write_text("[sampling]\ntemperature = 'hot'\n")
    result = run_cli(command, timeout=60)
    expect_cli_error(
        result,
        2,
        f"{project / 'phi-backends.toml'}, key sampling.temperature: temperature must be a number, got 'hot'",
        what=f"`{command}` with temperature = 'hot' in phi-backends.toml",
        surface="config",
    )


def test_invalid_toml_in_the_user_file(user: Path) -> None:
    user.write_text("[sampling\n")
    result = run_cli("run", "hello", timeout=60)
    expect_cli_error(
        result,
        2,
        f"cannot read config file {user}: invalid TOML",
        "(at line 1",
        what="user config file with invalid TOML",
        surface="config",
    )


def test_bad_environment_variable_stops_run() -> None:
    result = run_cli("run", "hello", env={"PHI_BACKENDS_BACKENDS": "onnx;mlx"}, timeout=60)
    expect_cli_error(
        result,
        2,
        "environment variable PHI_BACKENDS_BACKENDS: unknown backend 'onnx;mlx'",
        "takes names separated by commas",
        what="PHI_BACKENDS_BACKENDS separated by ';'",
        surface="config",
    )


def test_check_names_a_model_that_does_not_resolve(project: Path) -> None:
    (project / "phi-backends.toml").write_text('model = "./models/missing.gguf"\n')
    assert config().startswith("#")  # showing the config does not look for the model
    result = run_cli("config", "--check", timeout=60)
    expect_cli_error(
        result,
        2,
        "no such file or folder: ./models/missing.gguf",
        f"model './models/missing.gguf' is set by {project / 'phi-backends.toml'}, key model",
        what="config --check with a model path that does not exist",
        surface="config",
    )


def test_run_platform_flag_is_checked(project: Path) -> None:
    (project / "phi-backends.toml").write_text('platform = "apple-silicon"\n')
    result = run_cli("run", "hello", "--platform", "os=beos,arch=x86_64", timeout=60)
    expect_cli_error(
        result, 2, "unknown os 'beos'", "os is one of linux, darwin, windows", what="run --platform os=beos"
    )


def test_config_with_options_finds_the_backend_as_run_does(project: Path) -> None:
    """-O options belong to the backend that runs: config finds it by the same steps as run, so
    with no backend installed both stop with the same line."""
    hidden = plugins.KNOWN_BACKENDS
    shown = run_cli("config", "-m", "smollm2", "-O", "n_ctx=1024", block_plugins=hidden, timeout=60)
    ran = run_cli("run", "-m", "smollm2", "-O", "n_ctx=1024", block_plugins=hidden, timeout=60)
    line = expect_cli_error(shown, 1, "pip install", what="config -O with no backend installed")
    assert ran.returncode == 1 and ran.stderr.strip() == line
