"""The configuration: real TOML files in a temporary project folder, real environment variables.

No engine is needed: these run in the core session. Loading with the config on a real engine is
tested in plugins/llama-cpp/tests/test_config_run.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from phi_backends import SamplingConfig, UsageError, load, plugins
from phi_backends.config import resolve
from phi_backends.config_files import user_path
from phi_backends.errors import BackendUnavailableError, ConfigError, UnknownModelError
from phi_backends.models import catalogue, config_path
from phi_backends.models.catalogue import DEFAULT_MODEL
from tests.bad_inputs import expect_api_error


@pytest.fixture(autouse=True)
def project(config_project: Path) -> Path:
    """Every test here runs in an empty project folder, with no user config (conftest.py)."""
    return config_project


@pytest.fixture
def user(tmp_path: Path) -> Path:
    return tmp_path / "user.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- sources and precedence -------------------------------------------------------------------------


def test_without_any_config_everything_is_a_default() -> None:
    cfg = resolve()
    assert cfg.model == DEFAULT_MODEL and cfg.backend is None and cfg.backends == () and cfg.platform is None
    assert cfg.template == "auto"
    assert cfg.sampling() == SamplingConfig()
    assert {str(s.origin) for s in cfg.settings.values()} == {"default"}
    assert [f.found for f in cfg.files] == [False, False, False]


def test_each_layer_beats_the_ones_below(project: Path, user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(user, 'backend = "onnx"\n')
    assert resolve()["backend"].value == "onnx"
    assert str(resolve()["backend"].origin) == f"{user}, key backend"

    write(project / "phi-backends.toml", 'backend = "mlx"\n')
    assert resolve()["backend"].value == "mlx"
    assert str(resolve()["backend"].origin) == f"{project / 'phi-backends.toml'}, key backend"

    monkeypatch.setenv("PHI_BACKENDS_BACKEND", "llama-cpp")
    assert resolve().backend == "llama-cpp"
    assert str(resolve()["backend"].origin) == "environment variable PHI_BACKENDS_BACKEND"

    flagged = resolve({"backend": ("--backend", "onnx")})
    assert flagged.backend == "onnx" and str(flagged["backend"].origin) == "flag --backend"
    assert resolve({"backend": ("--backend", None)}).backend == "llama-cpp"  # a flag not given is no layer


def test_tables_merge_key_by_key_across_files(project: Path, user: Path) -> None:
    write(user, "[sampling]\ntemperature = 0.5\ntop_k = 40\n[llama-cpp]\nn_threads = 2\nn_ctx = 1024\n")
    write(project / "phi-backends.toml", "[sampling]\ntemperature = 0.0\n[llama-cpp]\nn_ctx = 256\n")
    cfg = resolve()
    assert cfg.sampling() == SamplingConfig(temperature=0.0, top_k=40)
    assert cfg.options("llama-cpp") == {"n_ctx": 256, "n_threads": 2}
    assert cfg.options("onnx") == {}
    assert cfg["sampling.temperature"].origin.layer == "project" and cfg["sampling.top_k"].origin.layer == "user"
    assert cfg["llama-cpp.n_threads"].origin.key == "llama-cpp.n_threads"


def test_flags_merge_per_sampling_field(project: Path) -> None:
    write(project / "phi-backends.toml", "[sampling]\ntemperature = 0.0\nmax_tokens = 20\n")
    cfg = resolve({"sampling.max_tokens": ("--max-tokens", 5), "sampling.top_p": ("--top-p", None)})
    assert cfg.sampling() == SamplingConfig(temperature=0.0, max_tokens=5)
    assert str(cfg["sampling.max_tokens"].origin) == "flag --max-tokens"


def test_flags_are_the_top_layer_and_options_flags_of_one_backend(project: Path, user: Path) -> None:
    """How load() and `run` apply their arguments: flags over every file, options key by key."""
    write(user, 'model = "phi3"\n[llama-cpp]\nn_batch = 64\n')
    write(project / "phi-backends.toml", "[llama-cpp]\nn_ctx = 256\nn_threads = 1\n")
    cfg = resolve({"model": ("--model", "smollm2"), "template": ("--template", None)})
    cfg = cfg.with_options("llama-cpp", {"n_ctx": ("-O n_ctx", 1024), "seed": ("-O seed", None)})
    assert cfg.model == "smollm2" and str(cfg["model"].origin) == "flag --model"
    assert cfg.options("llama-cpp") == {"n_batch": 64, "n_ctx": 1024, "n_threads": 1}
    assert str(cfg["llama-cpp.n_ctx"].origin) == "flag -O n_ctx"
    assert cfg["llama-cpp.n_threads"].origin.layer == "project" and cfg["llama-cpp.n_batch"].origin.layer == "user"
    # load()'s own arguments are flags too, named as arguments in what the configuration says
    assert str(resolve({"platform": ("platform", "linux-cuda")})["platform"].origin) == "argument platform"
    given = resolve({"platform": ("platform", "linux-cuda")}).platform_for_choice()
    assert given is not None and given.cuda


def test_pyproject_table_is_the_project_config(project: Path) -> None:
    write(project / "pyproject.toml", '[project]\nname = "app"\n\n[tool.phi-backends]\nmodel = "smollm2"\n')
    cfg = resolve()
    assert cfg.model == "smollm2"
    assert cfg["model"].origin.key == "tool.phi-backends.model"
    assert str(cfg["model"].origin) == f"{project / 'pyproject.toml'}, key tool.phi-backends.model"


def test_phi_backends_toml_hides_pyproject(project: Path) -> None:
    write(project / "pyproject.toml", '[tool.phi-backends]\nmodel = "smollm2"\nbackend = "onnx"\n')
    write(project / "phi-backends.toml", 'backend = "mlx"\n')
    cfg = resolve()
    assert cfg.backend == "mlx" and cfg.model == DEFAULT_MODEL  # not merged: one project file
    notes = {f.path.name: (f.found, f.note) for f in cfg.files if f.layer == "project"}
    assert notes == {"phi-backends.toml": (True, ""), "pyproject.toml": (False, "not read: phi-backends.toml wins")}


def test_pyproject_without_the_table_is_not_a_config(project: Path) -> None:
    write(project / "pyproject.toml", '[project]\nname = "app"\n')
    cfg = resolve()
    assert cfg.model == DEFAULT_MODEL
    assert [(f.path.name, f.note) for f in cfg.files if f.layer == "project"] == [
        ("phi-backends.toml", ""),
        ("pyproject.toml", "no [tool.phi-backends] table"),
    ]


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHI_BACKENDS_MODEL", "smollm2")
    monkeypatch.setenv("PHI_BACKENDS_BACKENDS", " onnx, llama-cpp,,onnx ")
    monkeypatch.setenv("PHI_BACKENDS_PLATFORM", "apple-silicon")
    monkeypatch.setenv("PHI_BACKENDS_TEMPLATE", "chatml")
    cfg = resolve()
    assert (cfg.model, cfg.backends, cfg.platform, cfg.template) == (
        "smollm2",
        ("onnx", "llama-cpp"),
        "apple-silicon",
        "chatml",
    )
    platform = cfg.platform_for_choice()
    assert platform is not None and platform.os == "darwin" and "PHI_BACKENDS_PLATFORM" in platform.origin


def test_auto_undoes_a_lower_layer(project: Path, user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(user, 'backend = "onnx"\nplatform = "linux-cuda"\n')
    write(project / "phi-backends.toml", 'backend = "auto"\nplatform = "auto"\n')
    cfg = resolve()
    assert cfg.backend is None and cfg.platform is None and cfg.platform_for_choice() is None
    monkeypatch.setenv("PHI_BACKENDS_PLATFORM", "windows-directml")
    assert resolve().platform == "windows-directml"


def test_a_table_for_a_backend_that_is_not_installed_is_accepted(project: Path) -> None:
    """Options for a known backend are used (and checked) only when that backend runs."""
    write(project / "phi-backends.toml", '[mlx]\ndevice = "gpu"\n[onnx]\nprovider = "dml"\n')
    assert resolve().options("mlx") == {"device": "gpu"}


def test_models_tables_extend_the_catalogue_project_over_user(project: Path, user: Path) -> None:
    write(user, '[models.mine]\ngguf = "/models/user.gguf"\n[models.only-user]\ngguf = "/models/u.gguf"\n')
    write(project / "phi-backends.toml", '[models.mine]\ngguf = "./models/project.gguf"\ntemplate = "phi3"\n')
    entries = catalogue()
    assert entries["mine"].artifacts["gguf"].path == "./models/project.gguf" and entries["mine"].template == "phi3"
    assert entries["only-user"].artifacts["gguf"].path == "/models/u.gguf"
    cfg = resolve()
    assert cfg["models.mine"].origin.layer == "project" and cfg["models.only-user"].origin.layer == "user"


@pytest.mark.parametrize(
    ("sys_platform", "environ", "expected"),
    [
        ("linux", {"XDG_CONFIG_HOME": "/xdg"}, "/xdg/phi-backends/config.toml"),
        ("linux", {}, "~/.config/phi-backends/config.toml"),
        ("linux", {"XDG_CONFIG_HOME": "relative/dir"}, "~/.config/phi-backends/config.toml"),  # XDG: ignored
        ("darwin", {"XDG_CONFIG_HOME": "/xdg"}, "~/Library/Application Support/phi-backends/config.toml"),
        ("win32", {"APPDATA": "C:/Users/me/AppData/Roaming"}, "C:/Users/me/AppData/Roaming/phi-backends/config.toml"),
        ("win32", {}, "~/AppData/Roaming/phi-backends/config.toml"),
        ("darwin", {"PHI_BACKENDS_CONFIG": "~/my.toml"}, "~/my.toml"),
    ],
)
def test_user_config_file_location(sys_platform: str, environ: dict[str, str], expected: str) -> None:
    assert user_path(sys_platform, environ) == Path(expected).expanduser()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG location is Linux's")
def test_user_file_found_through_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHI_BACKENDS_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg/phi-backends/config.toml"
    config_path().parent.mkdir(parents=True)
    write(config_path(), 'model = "smollm2"\n')
    assert resolve().model == "smollm2" and resolve()["model"].origin.layer == "user"


# -- pb.load() before any engine: the config's errors and the model it names ----------------------


def test_load_reports_a_config_model_that_does_not_exist_with_its_file(project: Path) -> None:
    write(project / "phi-backends.toml", 'model = "phi-3-mni"\n')
    with pytest.raises(UnknownModelError) as info:
        load()
    expect_api_error(
        info.value,
        UnknownModelError,
        "unknown model 'phi-3-mni'",
        "did you mean",
        "phi-backends.toml, key model",
        what="model in phi-backends.toml is no catalogue name, path or hub id",
        surface="config",
    )


def test_load_names_a_config_backend_that_is_not_installed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A backend this project would publish but that is not installed here (none of the real three can be
    # relied on to be missing: the development environment has them all).
    monkeypatch.setitem(plugins.KNOWN_BACKENDS, "vllm", "phi-backends[vllm]")
    write(project / "model.gguf", "")
    write(project / "phi-backends.toml", 'model = "./model.gguf"\nbackend = "vllm"\n')
    with pytest.raises(BackendUnavailableError) as info:
        load()
    expect_api_error(
        info.value,
        BackendUnavailableError,
        "pip install 'phi-backends[vllm]'",
        "phi-backends.toml, key backend",
        what="backend in phi-backends.toml is not installed",
        surface="config",
    )


def test_an_explicit_model_wins_over_a_bad_config_model(project: Path) -> None:
    write(project / "phi-backends.toml", 'model = "phi-3-mni"\n')
    with pytest.raises(UsageError) as info:
        load("./missing.gguf")
    assert "phi-backends.toml" not in str(info.value) and "no such file" in str(info.value)


# -- bad input: one line naming the file, the key and the fix -----------------------------------------

BAD_FILES = [
    ("model = \n", "invalid TOML", "fix the file", "phi-backends.toml is not valid TOML"),
    ('modle = "smollm2"\n', "key modle: unknown key", "did you mean 'model'?", "misspelt top-level key modle"),
    (
        "temperature = 0.2\n",
        "key temperature: unknown key",
        "put it under [sampling]",
        "sampling field at the top level",
    ),
    (
        "[llama_cpp]\nn_threads = 2\n",
        "key llama_cpp: unknown key",
        "did you mean [llama-cpp]?",
        "options table [llama_cpp]",
    ),
    (
        "[vllm]\nx = 1\n",
        "key vllm: unknown key",
        "one per backend: [llama-cpp], [mlx], [onnx]",
        "options table for an unknown backend",
    ),
    ("model = 3\n", "key model: must be a model name", "got 3", "model = 3 (not a string)"),
    ('backends = "onnx"\n', "key backends: must be a list", '["onnx", "llama-cpp"]', "backends given as a string"),
    ("backends = [1]\n", "key backends: backend names are strings", "got 1", "a number in backends"),
    (
        'backend = "lama-cpp"\n',
        "key backend: unknown backend 'lama-cpp'",
        "did you mean 'llama-cpp'?",
        "misspelt backend name",
    ),
    (
        'backends = ["onnx", "tensorrt"]\n',
        "key backends: unknown backend 'tensorrt'",
        "use one of",
        "unknown backend in backends",
    ),
    (
        'platform = "os=beos,arch=x86_64"\n',
        "key platform: unknown os 'beos'",
        "os is one of",
        "platform with an unknown os",
    ),
    (
        'platform = "apple-slicon"\n',
        "key platform: unknown platform item",
        "did you mean 'apple-silicon'?",
        "misspelt platform preset",
    ),
    ('template = "llama3"\n', "key template: unknown chat template", '"auto" for the model', "unknown template name"),
    ("sampling = 0.5\n", "key sampling: must be a table", "write it as [sampling]", "sampling = 0.5 (not a table)"),
    (
        "[sampling]\ntemperature = -1\n",
        "key sampling.temperature: temperature must be >= 0",
        "fix it there",
        "negative temperature in [sampling]",
    ),
    (
        "[sampling]\ntempreature = 0.2\n",
        "key sampling.tempreature: unknown sampling field",
        "did you mean 'temperature'?",
        "misspelt sampling field",
    ),
    (
        '[sampling]\ntop_k = "40"\n',
        "key sampling.top_k: top_k must be a whole number",
        "fix it there",
        "top_k given as a string",
    ),
    (
        '[sampling]\nstop = [""]\n',
        "key sampling.stop: stop strings must be non-empty",
        "fix it there",
        "an empty stop string",
    ),
    (
        '[models.x]\nggfu = "a/b/c.gguf"\n',
        "key models.x: unknown key 'ggfu'",
        "did you mean 'gguf'?",
        "misspelt format in [models.x]",
    ),
    (
        "[models.x]\ntemplate = 'phi3'\n",
        "key models.x: needs at least one of gguf, onnx, mlx",
        "",
        "[models.x] without a format",
    ),
    (
        "[models.x]\ngguf = 'a/b/c.gguf'\ncontext_length = 'big'\n",
        "key models.x.context_length: must be a whole number",
        "",
        "context_length as a string",
    ),
]


@pytest.mark.parametrize(("text", "needle", "fix", "what"), BAD_FILES, ids=[w for *_, w in BAD_FILES])
def test_bad_project_file(project: Path, text: str, needle: str, fix: str, what: str) -> None:
    path = write(project / "phi-backends.toml", text)
    with pytest.raises(ConfigError) as info:
        resolve()
    message = expect_api_error(info.value, ConfigError, str(path), needle, fix, what=what, surface="config")
    assert message.startswith(str(path)) or message.startswith(f"cannot read config file {path}")


def test_bad_pyproject_names_its_table(project: Path) -> None:
    write(project / "pyproject.toml", "[tool]\nphi-backends = 3\n")
    with pytest.raises(ConfigError) as info:
        resolve()
    expect_api_error(
        info.value,
        ConfigError,
        "pyproject.toml, key tool.phi-backends: must be a table",
        "[tool.phi-backends]",
        what="tool.phi-backends in pyproject.toml is not a table",
        surface="config",
    )


def test_bad_key_in_pyproject_is_named_with_its_full_path(project: Path) -> None:
    write(project / "pyproject.toml", "[tool.phi-backends.sampling]\ntop_p = 2.0\n")
    with pytest.raises(ConfigError) as info:
        resolve()
    expect_api_error(
        info.value,
        ConfigError,
        "key tool.phi-backends.sampling.top_p: top_p must be in (0, 1]",
        what="top_p = 2.0 in [tool.phi-backends.sampling]",
        surface="config",
    )


def test_bad_user_file_is_named(user: Path) -> None:
    write(user, "[sampling]\nseed = -5\n")
    with pytest.raises(ConfigError) as info:
        resolve()
    expect_api_error(
        info.value,
        ConfigError,
        f"{user}, key sampling.seed",
        "seed must be in",
        what="negative seed in the user config",
        surface="config",
    )


def test_file_that_is_not_utf8(project: Path) -> None:
    (project / "phi-backends.toml").write_bytes(b'model = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        resolve()
    expect_api_error(
        info.value, ConfigError, "not UTF-8 text", "save it as UTF-8", what="config file in Latin-1", surface="config"
    )


def test_config_path_that_is_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        resolve()
    expect_api_error(
        info.value,
        ConfigError,
        "is a folder or device, not a file",
        what="PHI_BACKENDS_CONFIG names a folder",
        surface="config",
    )


@pytest.mark.parametrize(
    ("name", "value", "needles", "what"),
    [
        (
            "PHI_BACKENDS_BACKEND",
            "llamacpp",
            ("unknown backend 'llamacpp'", "did you mean 'llama-cpp'?"),
            "PHI_BACKENDS_BACKEND misspelt",
        ),
        (
            "PHI_BACKENDS_BACKENDS",
            "onnx,mlxx",
            ("unknown backend 'mlxx'", "did you mean 'mlx'?"),
            "PHI_BACKENDS_BACKENDS with an unknown name",
        ),
        (
            "PHI_BACKENDS_PLATFORM",
            "linux-cpu,cuda=maybe",
            ("cuda='maybe'", "write cuda or no-cuda"),
            "PHI_BACKENDS_PLATFORM with a bad flag value",
        ),
        (
            "PHI_BACKENDS_TEMPLATE",
            "llama3",
            ("unknown chat template", "known templates"),
            "PHI_BACKENDS_TEMPLATE names no template",
        ),
    ],
)
def test_bad_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needles: tuple[str, ...], what: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        resolve()
    message = expect_api_error(
        info.value, ConfigError, f"environment variable {name}", *needles, what=what, surface="config"
    )
    assert message.startswith(f"environment variable {name}:")


def test_errors_are_reported_by_load_before_any_backend_is_looked_at(project: Path) -> None:
    write(project / "phi-backends.toml", "[sampling]\nmin_p = 3\n")
    with pytest.raises(ConfigError) as info:
        load()
    expect_api_error(
        info.value,
        ConfigError,
        "key sampling.min_p: min_p must be in",
        what="min_p = 3 in [sampling]",
        surface="config",
    )
