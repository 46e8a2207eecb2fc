"""The configuration, end to end on a real engine: a project file selects llama.cpp, its options and
sampling defaults for the tiny Phi-3; `pb.load()` and `phi-backends run` use them.

The tiny Phi-3 says the script (SCRIPT_TEXT) under greedy decoding and gibberish when sampled at
temperature 1, so the text shows which sampling settings were really used; ``n_ctx`` and
``n_threads`` show in the engine's info.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import phi_backends as pb
from phi_backends.errors import BackendUnavailableError, ConfigError, PhiBackendsError
from phi_backends.testing import SCRIPT_TEXT
from tests.bad_inputs import expect_api_error, expect_cli_error
from tests.cli import run_cli

PROMPT = "Write a haiku about ice hockey"


@pytest.fixture(autouse=True)
def project(config_project: Path) -> Path:
    """Every test here runs in an empty project folder, with no user config (conftest.py)."""
    return config_project


def write_project(
    folder: Path, model: Path, *, extra: str = "", sampling: str = "", llama: str = "n_ctx = 512\nn_threads = 1\n"
) -> Path:
    """A project file selecting llama.cpp, greedy decoding and small engine settings for ``model``."""
    path = folder / "phi-backends.toml"
    path.write_text(
        f'model = "{model}"\nbackend = "llama-cpp"\n{extra}\n'
        f"[sampling]\ntemperature = 0\nrepeat_penalty = 1.0\nmax_tokens = 50\n{sampling}\n"
        f"[llama-cpp]\n{llama}"
    )
    return path


# -- pb.load() ------------------------------------------------------------------------------------


def test_load_without_arguments_uses_the_project_config(project: Path, tiny_phi3: Path) -> None:
    write_project(project, tiny_phi3, extra='template = "phi3"')
    with pb.load() as gen:
        assert gen.backend == "llama-cpp" and gen.model == tiny_phi3.name
        assert gen.info.context_length == 512 and gen.info.metadata["threads"] == 1
        assert gen.template is not None and gen.template.name == "phi3"
        assert gen.sampling == pb.SamplingConfig(temperature=0, repeat_penalty=1.0, max_tokens=50)
        out = gen.generate(PROMPT)
        assert out.text == SCRIPT_TEXT and out.finish_reason == "stop"


def test_explicit_arguments_win_and_options_merge_under_them(project: Path, tiny_phi3: Path) -> None:
    write_project(project, tiny_phi3)
    with pb.load(str(tiny_phi3), n_ctx=768) as gen:
        assert gen.info.context_length == 768  # the call's n_ctx ...
        assert gen.info.metadata["threads"] == 1  # ... over the config's table, whose n_threads stays
        # A config given to a call is used whole: temperature 1.0 here, not the config's 0.
        sampled = gen.generate(PROMPT, pb.SamplingConfig(seed=7, max_tokens=8))
        assert sampled.text != SCRIPT_TEXT and sampled.usage.completion_tokens == 8
        # The documented way to change one field of the defaults.
        short = gen.generate(PROMPT, gen.sampling.replace(max_tokens=3))
        assert short.finish_reason == "length" and SCRIPT_TEXT.startswith(short.text) and short.text


def test_environment_beats_the_project_file(project: Path, tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(project, project / "missing.gguf", extra='template = "chatml"')
    monkeypatch.setenv("PHI_BACKENDS_MODEL", str(tiny_phi3))
    monkeypatch.setenv("PHI_BACKENDS_TEMPLATE", "phi3")
    with pb.load() as gen:
        assert gen.model == tiny_phi3.name
        assert gen.template is not None and gen.template.name == "phi3"
        assert gen.generate(PROMPT).text == SCRIPT_TEXT


def test_user_file_fills_in_what_the_project_leaves_out(project: Path, tiny_phi3: Path, tmp_path: Path) -> None:
    (tmp_path / "user.toml").write_text("[sampling]\nmax_tokens = 2\ntemperature = 1.0\n[llama-cpp]\nn_ctx = 768\n")
    (project / "phi-backends.toml").write_text(f'model = "{tiny_phi3}"\n[sampling]\ntemperature = 0\n')
    with pb.load() as gen:
        assert gen.backend == "llama-cpp"  # chosen automatically for a GGUF
        assert gen.info.context_length == 768
        out = gen.generate(PROMPT)
        assert out.usage.completion_tokens == 2 and SCRIPT_TEXT.startswith(out.text) and out.text


def test_explain_uses_the_config(project: Path, tiny_phi3: Path) -> None:
    (project / "phi-backends.toml").write_text(
        f'model = "{tiny_phi3}"\nbackends = ["onnx", "llama-cpp"]\nplatform = "linux-cuda"\n'
    )
    explanation = pb.explain()
    assert explanation.model == str(tiny_phi3) and explanation.chosen == "llama-cpp"
    assert explanation.preference == ("onnx", "llama-cpp")
    assert explanation.platform.cuda and "phi-backends.toml, key platform" in explanation.platform.origin
    assert pb.explain(preference=[]).preference == ()  # an explicit argument wins


def test_explain_says_a_configured_backend_wins_or_cannot_run_it(project: Path, tiny_phi3: Path) -> None:
    config = project / "phi-backends.toml"
    config.write_text(f'model = "{tiny_phi3}"\nbackend = "llama-cpp"\nplatform = "apple-silicon"\n')
    explanation = pb.explain()  # llama.cpp is the only backend reading a GGUF: the ranking agrees
    assert explanation.chosen == "llama-cpp"
    config.write_text(f'model = "{tiny_phi3}"\nbackend = "mlx"\n')
    explanation = pb.explain()  # load() would fail on this config: explain must not name a backend
    assert explanation.chosen is None
    assert "phi-backends.toml, key backend names mlx, which cannot run this model here" in explanation.why


@pytest.mark.parametrize(
    ("table", "needles", "what"),
    [
        ("n_threads = 0\n", ("key llama-cpp.n_threads: n_threads must be at least 1",), "n_threads = 0 in [llama-cpp]"),
        (
            "n_thread = 2\n",
            ("key llama-cpp.n_thread: the llama-cpp backend has no option 'n_thread'",),
            "unknown option in [llama-cpp]",
        ),
        (
            "n_ctx = 'big'\n",
            ("key llama-cpp.n_ctx: option n_ctx must be a whole number",),
            "n_ctx = 'big' in [llama-cpp]",
        ),
    ],
)
def test_bad_option_in_the_config_names_file_and_key(
    project: Path, tiny_phi3: Path, table: str, needles: tuple[str, ...], what: str
) -> None:
    path = write_project(project, tiny_phi3, llama=table)
    with pytest.raises(ConfigError) as info:
        pb.load()
    expect_api_error(
        info.value, ConfigError, str(path), *needles, "fix or remove it there", what=what, surface="config"
    )


def test_options_of_another_backend_are_not_checked(project: Path, tiny_phi3: Path) -> None:
    """An [mlx] table with options llama.cpp does not have is used only when mlx runs."""
    write_project(project, tiny_phi3)
    with (project / "phi-backends.toml").open("a") as f:
        f.write('\n[mlx]\ndevice = "gpu"\nprefill_step_size = 64\n')
    with pb.load() as gen:
        assert gen.generate(PROMPT).text == SCRIPT_TEXT


def test_config_backend_that_cannot_read_the_model_names_the_file(project: Path, tiny_phi3: Path) -> None:
    path = project / "phi-backends.toml"
    path.write_text(f'model = "{tiny_phi3}"\nbackend = "onnx"\n')
    with pytest.raises(PhiBackendsError) as info:
        pb.load()
    message = str(info.value)
    assert f"backend 'onnx' is set by {path}, key backend; change it there" in message, message
    if isinstance(info.value, BackendUnavailableError):  # onnx is not installed in this session
        assert "-m pip install -e " in message and "plugins/onnx" in message  # the plugins are not on the index
    else:  # installed: it does not read GGUF files
        assert "use the llama-cpp backend for it" in message
    with pb.load(backend="llama-cpp") as gen:  # the argument wins over the config
        assert gen.backend == "llama-cpp"


# -- phi-backends run ------------------------------------------------------------------------------


def run_json(*args: str) -> dict[str, object]:
    result = run_cli("run", PROMPT, "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_run_uses_the_project_config(project: Path, tiny_phi3: Path) -> None:
    write_project(project, tiny_phi3, extra='template = "phi3"')
    data = run_json()
    assert data["text"] == SCRIPT_TEXT and data["backend"] == "llama-cpp" and data["model"] == tiny_phi3.name


def test_run_flags_merge_per_field_with_the_config(project: Path, tiny_phi3: Path) -> None:
    write_project(project, tiny_phi3, sampling='stop = ["frozen"]\n')
    data = run_json()
    assert data["text"] == SCRIPT_TEXT[: SCRIPT_TEXT.index("frozen")] and data["finish_reason"] == "stop"
    data = run_json("--max-tokens", "2")  # a flag for one field; the config's greedy decoding stays
    usage = data["usage"]
    assert isinstance(usage, dict) and usage["completion_tokens"] == 2 and data["finish_reason"] == "length"
    assert SCRIPT_TEXT.startswith(str(data["text"])) and data["text"]
    data = run_json("--temperature", "1", "--seed", "7", "--max-tokens", "8")  # the flag beats the file
    assert not SCRIPT_TEXT.startswith(str(data["text"]))


def test_run_uses_the_config_options(project: Path, tiny_phi3: Path) -> None:
    write_project(project, tiny_phi3, llama="n_ctx = 256\n")  # llama.cpp's smallest context
    result = run_cli("run", "ice " * 300)
    expect_cli_error(result, 1, "the context window is 256", what="prompt longer than n_ctx = 256 set in [llama-cpp]")
    result = run_cli("run", "ice " * 300, "-O", "n_ctx=1024", "--max-tokens", "1")  # -O wins over the table
    assert result.returncode == 0, result.stderr


def test_run_reports_a_bad_config_option_in_one_line(project: Path, tiny_phi3: Path) -> None:
    path = write_project(project, tiny_phi3, llama="n_gpu_layers = 'all'\n")
    for args in (("run",), ("config", "--check")):
        result = run_cli(*args)
        expect_cli_error(
            result,
            2,
            f"{path}, key llama-cpp.n_gpu_layers: option n_gpu_layers must be a whole number, got 'all'",
            what=f"`{' '.join(args)}` with n_gpu_layers = 'all' in [llama-cpp]",
            surface="config",
        )


def test_config_check_passes_a_good_config(project: Path, tiny_phi3: Path) -> None:
    write_project(project, tiny_phi3)
    result = run_cli("config", "--check")
    assert result.returncode == 0, result.stderr
    assert "n_ctx = 512" in result.stdout and f"{project / 'phi-backends.toml'}, key llama-cpp.n_ctx" in result.stdout


def test_backends_explain_uses_the_config_model(project: Path, tiny_phi3: Path) -> None:
    (project / "phi-backends.toml").write_text(f'model = "{tiny_phi3}"\n')
    result = run_cli("backends", "--explain", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == str(tiny_phi3) and data["chosen"] == "llama-cpp"


# -- `phi-backends config` shows the merge that `run` performs --------------------------------------


def config_settings(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli("config", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    settings: dict[str, Any] = json.loads(result.stdout)["settings"]
    return settings


@pytest.mark.parametrize("top", ["user", "project", "env", "flag"])
def test_config_and_run_take_the_model_from_the_same_layer(
    project: Path, tiny_phi3: Path, tmp_path: Path, top: str
) -> None:
    """One key set in every layer up to ``top``: config names that layer and run loads its model.

    Each layer names its own link to the tiny Phi-3, so run's "model" (the name as given) says
    which one it used."""
    link = {}
    for layer in ("user", "project", "env", "flag"):
        link[layer] = tmp_path / f"{layer}.gguf"
        link[layer].symlink_to(tiny_phi3)
    (tmp_path / "user.toml").write_text(f'model = "{link["user"]}"\n[sampling]\ntemperature = 0\nmax_tokens = 2\n')
    if top != "user":
        (project / "phi-backends.toml").write_text(f'model = "{link["project"]}"\n[llama-cpp]\nn_ctx = 512\n')
    env = {"PHI_BACKENDS_MODEL": str(link["env"])} if top in ("env", "flag") else {}
    args = ("--model", str(link["flag"])) if top == "flag" else ()
    model = config_settings(*args, env=env)["model"]
    assert model["value"] == str(link[top])
    assert model["origin"]["layer"] == top
    result = run_cli("run", PROMPT, "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == link[top].name


def test_config_and_run_merge_sampling_per_field_and_options_under_o(
    project: Path, tiny_phi3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user.toml").write_text("[sampling]\nmax_tokens = 4\nseed = 11\n")
    (project / "phi-backends.toml").write_text(
        f'model = "{tiny_phi3}"\nbackend = "llama-cpp"\n'
        "[sampling]\ntemperature = 0\nrepeat_penalty = 1.0\nseed = 5\n"
        "[llama-cpp]\nn_ctx = 256\nn_threads = 1\n"
    )
    flags = ("--seed", "7", "-O", "n_ctx=1024")
    settings = config_settings(*flags)
    shown = {key: (s["value"], s["origin"]["layer"]) for key, s in settings.items()}
    assert shown["sampling.seed"] == (7, "flag")  # over the project's 5 and the user's 11
    assert shown["sampling.max_tokens"] == (4, "user") and shown["sampling.temperature"] == (0, "project")
    assert shown["llama-cpp.n_ctx"] == (1024, "flag") and shown["llama-cpp.n_threads"] == (1, "project")
    assert settings["llama-cpp.n_ctx"]["origin"] == {"layer": "flag", "where": "-O n_ctx"}

    # run with the same flags: the seed and the length the config shows, greedy as the project says,
    # and a prompt that fits in -O's 1024 tokens but not in the project's 256.
    result = run_cli("run", "ice " * 300, "--json", *flags)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["seed"] == shown["sampling.seed"][0] and data["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == shown["sampling.max_tokens"][0]
    greedy = run_cli("run", PROMPT, "--json", *flags)
    assert greedy.returncode == 0, greedy.stderr
    assert SCRIPT_TEXT.startswith(json.loads(greedy.stdout)["text"])

    # In process, through run's own parser and flags: the engine and the sampling config shows.
    from phi_backends.api import load_with_flags
    from phi_backends.cli import config as cli_config
    from phi_backends.cli.main import build_parser

    keys, options = cli_config.flags(build_parser().parse_args(["run", *flags]))
    with load_with_flags(keys, options) as gen:
        assert gen.backend == "llama-cpp"
        assert gen.info.context_length == shown["llama-cpp.n_ctx"][0]
        assert gen.info.metadata["threads"] == shown["llama-cpp.n_threads"][0]
        assert gen.sampling == pb.SamplingConfig(temperature=0, repeat_penalty=1.0, seed=7, max_tokens=4)
