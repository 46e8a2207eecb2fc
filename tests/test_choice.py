"""The core's ranking of backend plugins' verdicts, with small plugins registered on the real plugin manager.

The real backends are hidden (``PHI_BACKENDS_BLOCK_PLUGINS``) so that these tests see only the
plugins they register; the real plugins' own verdicts are tested in each plugin's
``tests/test_assess.py``, and all of them together in ``tests/parity/test_choice_all_backends.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import phi_backends as pb
from phi_backends import Availability, Fit, ModelQuery, Platform, Verdict, hookimpl, plugins
from phi_backends.errors import (
    BackendUnavailableError,
    ModelFormatError,
    UnknownBackendError,
    UsageError,
)
from phi_backends.models.catalogue import DEFAULT_MODEL
from phi_backends.selection import choice
from tests.bad_inputs import RECORD_ENV, expect_api_error, expect_cli_error
from tests.cli import CLI

Rule = Callable[[ModelQuery, Platform], "Verdict | None"]


class FakeBackend:
    """A whole Backend that never loads; its verdicts come from ``rule`` (None: no opinion)."""

    model_formats = ()

    def __init__(self, name: str, formats: tuple[str, ...], available: Availability, rule: Rule | None = None) -> None:
        self.name = name
        self.formats = formats
        self.install_hint = f"pip install {name}"
        self.available = available
        self.rule = rule
        self.asked: list[tuple[ModelQuery, Platform]] = []

    def availability(self) -> Availability:
        return self.available

    def validate_options(self, options: Mapping[str, Any]) -> None:
        pass

    def assess_model(self, model: ModelQuery, platform: Platform) -> Verdict | None:
        self.asked.append((model, platform))
        return None if self.rule is None else self.rule(model, platform)

    def load(self, source: Any, options: Mapping[str, Any]) -> Any:
        raise AssertionError("the choice never loads a model")


class SilentPlugin:
    """A plugin whose backend has no opinion (``assess_model`` returns None)."""

    def __init__(
        self, name: str, formats: tuple[str, ...], *, ok: bool = True, reason: str = "", rule: Rule | None = None
    ) -> None:
        self.backend = FakeBackend(name, formats, Availability(ok, reason or f"{name} is fine", ("cpu",)), rule)

    @hookimpl
    def register_backends(self, register: Callable[[Any], None]) -> None:
        register(self.backend)

    @property
    def asked(self) -> list[tuple[ModelQuery, Platform]]:
        return self.backend.asked


class RatingPlugin(SilentPlugin):
    """A plugin whose backend's ``assess_model`` applies ``rule`` and records what it was asked."""

    def __init__(self, name: str, formats: tuple[str, ...], rule: Rule, *, ok: bool = True, reason: str = "") -> None:
        super().__init__(name, formats, ok=ok, reason=reason, rule=rule)


def fixed(name: str, fit: Fit, reason: str = "", **options: Any) -> Rule:
    return lambda model, platform: Verdict(name, fit, reason or f"{name} is {fit}", options)


def rating(name: str, fit: Fit, formats: tuple[str, ...] = ("gguf", "onnx", "mlx")) -> RatingPlugin:
    return RatingPlugin(name, formats, fixed(name, fit))


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Register in-test plugins (each under its own name) on a fresh plugin manager without the
    real ones; no config file or PHI_BACKENDS_* variable but the test's own."""
    for name in [n for n in os.environ if n.startswith("PHI_BACKENDS_") and n != RECORD_ENV]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PHI_BACKENDS_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(plugins.BLOCK_ENV, ",".join(plugins.KNOWN_BACKENDS))
    plugins.reset()

    def register(*found: SilentPlugin) -> None:
        manager = plugins.plugin_manager()
        for plugin in found:
            manager.register(plugin, name=f"test-{plugin.backend.name}")
        manager.check_pending()

    yield register
    plugins.reset()


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))  # the format is told by the magic; nothing here loads it
    return path


@pytest.fixture
def onnx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "onnx-model"
    folder.mkdir()
    (folder / "genai_config.json").write_text("{}")
    return folder


@pytest.fixture
def mlx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mlx-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


LINUX = Platform("linux", "x86_64")


# -- ranking ----------------------------------------------------------------------------------------


def test_fit_ranks_first(install: Callable[..., None]) -> None:
    install(rating("llama-cpp", Fit.FALLBACK), rating("onnx", Fit.GOOD), rating("mlx", Fit.BEST))
    found = choice.explain("phi-3-mini-4k-instruct", platform=LINUX)
    assert found.chosen == "mlx" and found.ranking == ("mlx", "onnx", "llama-cpp")
    assert [(a.backend, a.rank, a.fit) for a in found.backends[:3]] == [
        ("mlx", 1, Fit.BEST),
        ("onnx", 2, Fit.GOOD),
        ("llama-cpp", 3, Fit.FALLBACK),
    ]
    assert found.why == "it fits best (best; next: onnx, good)"


def test_ties_go_to_the_preference_order_then_the_built_in_order(install: Callable[..., None]) -> None:
    install(rating("mlx", Fit.GOOD), rating("onnx", Fit.GOOD), rating("llama-cpp", Fit.GOOD))
    model = "phi-3-mini-4k-instruct"
    plain = choice.explain(model, platform=LINUX)
    assert plain.ranking == choice.BUILTIN_ORDER == ("llama-cpp", "onnx", "mlx")
    assert "built-in order (llama-cpp, onnx, mlx)" in plain.why
    preferred = choice.explain(model, platform=LINUX, preference=["mlx"])
    assert preferred.ranking == ("mlx", "llama-cpp", "onnx")
    assert preferred.why == "it fits as well as llama-cpp, onnx (good) and comes first in the preference order (mlx)"
    assert choice.explain(model, platform=LINUX, preference=("onnx", "mlx")).ranking == ("onnx", "mlx", "llama-cpp")


def test_a_preference_does_not_beat_a_better_fit(install: Callable[..., None]) -> None:
    install(rating("llama-cpp", Fit.GOOD), rating("mlx", Fit.FALLBACK))
    found = choice.explain("phi-3-mini-4k-instruct", platform=LINUX, preference=["mlx"])
    assert found.chosen == "llama-cpp" and found.ranking == ("llama-cpp", "mlx")


def test_unknown_names_in_a_preference_are_refused(install: Callable[..., None]) -> None:
    install(rating("llama-cpp", Fit.GOOD))
    # Known backends that are not installed are fine in a preference (configs travel between machines).
    assert choice.explain("phi3", platform=LINUX, preference=["mlx", "onnx", "llama-cpp"]).chosen == "llama-cpp"
    with pytest.raises(UnknownBackendError) as caught:
        choice.explain("phi3", platform=LINUX, preference=["llama-cpp", "onxx"])
    expect_api_error(
        caught.value,
        UnknownBackendError,
        "unknown backend 'onxx' in the backend preference order",
        "did you mean 'onnx'",
        what="unknown backend in a preference order",
    )


# -- which backends are offered the model ------------------------------------------------------------


def test_a_file_is_offered_only_to_backends_reading_its_format(
    install: Callable[..., None], gguf: Path, onnx_folder: Path, mlx_folder: Path
) -> None:
    readers = {
        fmt: rating(name, Fit.GOOD, (fmt,)) for name, fmt in [("llama-cpp", "gguf"), ("onnx", "onnx"), ("mlx", "mlx")]
    }
    install(*readers.values())
    for path, fmt, name in [(gguf, "gguf", "llama-cpp"), (onnx_folder, "onnx", "onnx"), (mlx_folder, "mlx", "mlx")]:
        for plugin in readers.values():
            plugin.asked.clear()
        found = choice.explain(str(path), platform=LINUX)
        assert found.kind == "path" and found.formats == (fmt,)
        assert found.chosen == name and found.ranking == (name,)
        for other in found.backends:
            if other.backend != name:
                assert other.fit == Fit.UNUSABLE and other.rank is None and other.judged_by == "core"
        assert [p for p in readers if readers[p].asked] == [fmt], "only the reader's plugin is asked"
    onnx_row = choice.explain(str(gguf), platform=LINUX).assessment("onnx")
    assert onnx_row.reason == f"{gguf} is a GGUF file; it reads ONNX Runtime GenAI folders"


def test_a_catalogue_name_is_offered_to_each_format_it_has(install: Callable[..., None]) -> None:
    install(rating("llama-cpp", Fit.GOOD, ("gguf",)), rating("onnx", Fit.BEST, ("onnx",)))
    everything = choice.explain("phi-3-mini-4k-instruct", platform=LINUX)
    assert everything.formats == ("gguf", "mlx", "onnx") and everything.ranking == ("onnx", "llama-cpp")
    gguf_only = choice.explain("smollm2", platform=LINUX)  # the catalogue has only a GGUF of SmolLM2
    assert gguf_only.ranking == ("llama-cpp",)
    assert gguf_only.assessment("onnx").reason.startswith(
        "the catalogue has no onnx artifact for smollm2-135m-instruct"
    )


def test_a_hub_repository_is_offered_to_every_backend(install: Callable[..., None]) -> None:
    install(rating("llama-cpp", Fit.GOOD, ("gguf",)), rating("onnx", Fit.BEST, ("onnx",)))
    repo = choice.model_query("someone/some-model")
    assert repo.kind == "hub" and repo.formats >= {"gguf", "onnx", "mlx"}, "what it holds is listed only on download"
    assert choice.explain("someone/some-model", platform=LINUX).ranking == ("onnx", "llama-cpp")


def test_an_unavailable_backend_is_unusable_with_its_reason_and_not_asked(install: Callable[..., None]) -> None:
    broken_engine = RatingPlugin("onnx", ("onnx",), fixed("onnx", Fit.BEST), ok=False, reason="libonnx.so is missing")
    install(broken_engine, rating("llama-cpp", Fit.FALLBACK, ("gguf",)))
    found = choice.explain("phi3", platform=LINUX)
    row = found.assessment("onnx")
    assert (row.fit, row.rank, row.reason, row.judged_by) == (Fit.UNUSABLE, None, "libonnx.so is missing", "core")
    assert found.chosen == "llama-cpp" and not broken_engine.asked


def test_a_plugin_without_the_hook_gets_the_core_default(install: Callable[..., None], gguf: Path) -> None:
    install(SilentPlugin("llama-cpp", ("gguf",)), SilentPlugin("mlx", ("mlx",)))
    found = choice.explain(str(gguf), platform=LINUX)
    row = found.assessment("llama-cpp")
    assert (row.fit, row.rank, row.judged_by) == (Fit.FALLBACK, 1, "core")
    assert row.reason == "its plugin does not rate it; it reads GGUF files and can run here"
    assert found.assessment("mlx").fit == Fit.UNUSABLE


def test_the_platform_reaches_the_plugins(install: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    def by_platform(model: ModelQuery, platform: Platform) -> Verdict:
        return Verdict("llama-cpp", Fit.BEST if platform.cuda else Fit.GOOD, f"on {platform.os}")

    plugin = RatingPlugin("llama-cpp", ("gguf",), by_platform)
    install(plugin, rating("onnx", Fit.GOOD, ("onnx",)))
    found = choice.explain("phi3", platform="linux-cuda")
    assert plugin.asked[-1][1] == Platform.from_spec("linux-cuda") and found.platform.cuda
    assert found.assessment("llama-cpp").fit == Fit.BEST and found.chosen == "llama-cpp"
    monkeypatch.setenv("PHI_BACKENDS_PLATFORM", "windows-directml")
    from_env = choice.explain("phi3")
    assert plugin.asked[-1][1].os == "windows" and "PHI_BACKENDS_PLATFORM" in from_env.platform.origin
    assert from_env.assessment("llama-cpp").reason == "on windows"


# -- plugins that misbehave, backends that are not there ---------------------------------------------


def test_a_failing_or_confused_plugin_is_reported_not_fatal(install: Callable[..., None]) -> None:
    def explode(model: ModelQuery, platform: Platform) -> Verdict:
        raise RuntimeError("no coffee")

    install(
        RatingPlugin("llama-cpp", ("gguf",), explode),
        RatingPlugin("onnx", ("onnx",), lambda m, p: "best"),  # type: ignore[arg-type,return-value]
        RatingPlugin("mlx", ("mlx",), fixed("llama-cpp", Fit.BEST)),  # answers for another plugin's backend
    )
    found = choice.explain("phi3", platform=LINUX)
    assert found.broken == {
        "test-llama-cpp": "assess_model failed: RuntimeError: no coffee",
        "test-onnx": "assess_model returned str, not a Verdict or None",
        "test-mlx": "assess_model answered for backend 'llama-cpp', which this plugin does not register",
    }
    assert all(a.fit == Fit.FALLBACK and a.judged_by == "core" for a in found.backends if a.installed)
    assert found.chosen == "llama-cpp", "the core default still ranks, by the built-in order"


def test_known_backends_that_are_missing_are_listed_with_how_to_get_them(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(plugins.KNOWN_BACKENDS, "quantum", "phi-backends[quantum]")
    install(rating("llama-cpp", Fit.GOOD, ("gguf",)))
    found = choice.explain("phi3", platform=LINUX)
    rows = {a.backend: a for a in found.backends}
    assert not rows["quantum"].installed and rows["quantum"].state == "missing"
    assert rows["quantum"].reason == "not installed: pip install 'phi-backends[quantum]'"
    assert rows["onnx"].reason == "blocked by PHI_BACKENDS_BLOCK_PLUGINS"
    assert found.backends[0].backend == "llama-cpp", "ranked backends come first"


# -- choose(): what load() uses --------------------------------------------------------------------


def test_choose_returns_the_backend_and_the_options_its_verdict_assumes(install: Callable[..., None]) -> None:
    install(
        RatingPlugin("onnx", ("onnx",), fixed("onnx", Fit.BEST, provider="dml")),
        rating("llama-cpp", Fit.GOOD, ("gguf",)),
    )
    picked = choice.choose("phi3", platform=LINUX)
    assert picked.backend.name == "onnx" and dict(picked.options) == {"provider": "dml"}
    assert picked.explanation is not None and picked.explanation.chosen == "onnx"
    assert pb.api.choose_backend("phi3", platform=LINUX, preference=["llama-cpp"]).name == "onnx"


def test_choose_a_named_backend_asks_only_its_plugin(install: Callable[..., None]) -> None:
    onnx = RatingPlugin("onnx", ("onnx",), fixed("onnx", Fit.BEST, provider="cuda"))
    llama = rating("llama-cpp", Fit.GOOD, ("gguf",))
    install(onnx, llama)
    picked = choice.choose("phi3", backend="onnx", platform=LINUX)
    assert picked.backend is onnx.backend and dict(picked.options) == {"provider": "cuda"}
    assert picked.explanation is None and onnx.asked and not llama.asked


def test_choose_when_nothing_can_run(install: Callable[..., None], gguf: Path, tmp_path: Path) -> None:
    install(
        RatingPlugin("onnx", ("onnx",), fixed("onnx", Fit.UNUSABLE, "needs a GPU")),
        SilentPlugin("mlx", ("mlx",), ok=False, reason="no mlx"),
    )
    with pytest.raises(BackendUnavailableError) as caught:
        choice.choose("phi3", platform=LINUX)
    expect_api_error(
        caught.value,
        BackendUnavailableError,
        "no installed backend can run phi3 here",
        "onnx: needs a GPU",
        "mlx: no mlx",
        what="no installed backend can run the model here",
    )
    with pytest.raises(BackendUnavailableError) as caught:
        choice.choose(str(gguf), platform=LINUX)
    expect_api_error(
        caught.value,
        BackendUnavailableError,
        "no installed backend reads",
        "GGUF files",
        "installed: mlx, onnx",
        what="no installed backend reads the model's format",
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(ModelFormatError) as caught:
        choice.choose(str(tmp_path / "notes"), platform=LINUX)
    expect_api_error(
        caught.value, ModelFormatError, "is not a model folder phi-backends can read", what="a folder that is no model"
    )


def test_choose_with_no_backend_installed_says_how_to_install_one(install: Callable[..., None]) -> None:
    install()
    with pytest.raises(BackendUnavailableError) as caught:
        choice.choose("phi3", platform=LINUX)
    expect_api_error(
        caught.value,
        BackendUnavailableError,
        "no backend is",  # "installed", or "available" where real plugins are installed but blocked here
        "-m pip install -e ",
        "plugins/llama-cpp",
        what="no backend installed (automatic choice)",
    )


@pytest.mark.parametrize(
    ("model", "named", "needles"),
    [
        ("gguf", "mlx", ["is a GGUF file, which the mlx backend does not read", "use the llama-cpp backend"]),
        (
            "onnx_folder",
            "llama-cpp",
            ["is an ONNX Runtime GenAI folder, which the llama-cpp backend", "use the onnx backend"],
        ),
        ("mlx_folder", "onnx", ["is an MLX/safetensors folder, which the onnx backend", "use the mlx backend"]),
    ],
)
def test_a_named_backend_that_does_not_read_the_format(
    install: Callable[..., None], request: pytest.FixtureRequest, model: str, named: str, needles: list[str]
) -> None:
    install(
        rating("llama-cpp", Fit.GOOD, ("gguf",)), rating("onnx", Fit.GOOD, ("onnx",)), rating("mlx", Fit.GOOD, ("mlx",))
    )
    path = str(request.getfixturevalue(model))
    with pytest.raises(UsageError) as caught:
        choice.choose(path, backend=named)
    kinds = {"gguf": "a GGUF file", "onnx_folder": "an ONNX folder", "mlx_folder": "an MLX folder"}
    expect_api_error(
        caught.value,
        UsageError,
        *needles,
        "leave the backend unset",
        what=f"{kinds[model]} with a backend that does not read it",
    )
    with pytest.raises(UsageError):
        pb.load(path, backend=named)  # load() checks the same, before anything is loaded


def test_a_named_backend_without_the_catalogue_artifact(install: Callable[..., None]) -> None:
    install(rating("llama-cpp", Fit.GOOD, ("gguf",)), rating("onnx", Fit.GOOD, ("onnx",)))
    with pytest.raises(UsageError) as caught:
        choice.choose("smollm2", backend="onnx")
    expect_api_error(
        caught.value,
        UsageError,
        "the catalogue has no onnx artifact for smollm2-135m-instruct (it has: gguf)",
        "use the llama-cpp backend",
        what="a catalogue model with a backend it has no artifact for",
    )


# -- the public API and the command line -------------------------------------------------------------


def test_explain_defaults_to_the_default_model_and_serializes(install: Callable[..., None]) -> None:
    install(rating("llama-cpp", Fit.GOOD, ("gguf",)))
    found = pb.explain(platform="linux-cpu", preference=[])
    assert found.model == DEFAULT_MODEL and found.chosen == "llama-cpp"
    data = json.loads(json.dumps(found.as_dict()))
    assert data["chosen"] == "llama-cpp" and data["platform"]["os"] == "linux"
    assert data["backends"][0] == {
        "backend": "llama-cpp",
        "rank": 1,
        "fit": "good",
        "installed": True,
        "reason": "llama-cpp is good",
        "formats": ["gguf"],
        "options": {},
        "judged_by": "plugin",
    }
    text = "\n".join(found.lines())
    assert "1     llama-cpp  good      llama-cpp is good" in text and "chosen: llama-cpp" in text


PLUGIN = """
from phi_backends import Availability, Fit, Verdict, hookimpl

def rate(model, platform):
    return None

class Backend:
    name = "{name}"
    formats = {formats!r}
    install_hint = "pip install {name}"
    model_formats = ()
    def availability(self):
        return Availability(True, "ready", ("cpu",))
    def validate_options(self, options):
        pass
    def assess_model(self, model, platform):
        return rate(model, platform)
    def load(self, source, options):
        raise SystemExit("never loaded")

@hookimpl
def register_backends(register):
    register(Backend())
"""
RATES = """
def rate(model, platform):
    if not model.offers(Backend.formats):
        return None
    return Verdict("{name}", Fit.BEST if platform.cuda else Fit.GOOD, "cuda" if platform.cuda else "cpu")
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Two installed plugins, as pip installs them: alpha (GGUF, rates itself) and beta (ONNX and GGUF, does not)."""
    from tests.test_plugins import install_plugin

    folder = tmp_path / "site"
    folder.mkdir()
    install_plugin(
        folder,
        "alpha_plugin",
        "alpha",
        "phi_alpha",
        PLUGIN.format(name="alpha", formats=("gguf",)) + RATES.format(name="alpha"),
    )
    install_plugin(folder, "beta_plugin", "beta", "phi_beta", PLUGIN.format(name="beta", formats=("onnx", "gguf")))
    return folder


def cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``phi-backends`` seeing only the test plugins, and no config but the one a test gives."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PHI_BACKENDS_")}
    full = {
        **clean,
        "PYTHONPATH": str(site),
        plugins.BLOCK_ENV: ",".join(plugins.KNOWN_BACKENDS),
        "PHI_BACKENDS_CONFIG": str(site / "no-config.toml"),
        **env,
    }
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full, timeout=120, cwd=site)


def test_cli_explain_with_a_platform(site: Path, gguf: Path) -> None:
    result = cli(site, "backends", "--explain", str(gguf), "--platform", "linux-cuda", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["chosen"] == "alpha" and data["platform"]["cuda"]
    assert [(b["backend"], b["fit"], b["judged_by"]) for b in data["backends"] if b["installed"]] == [
        ("alpha", "best", "plugin"),
        ("beta", "fallback", "core"),
    ]
    text = cli(site, "backends", "--explain", str(gguf), "--prefer", "beta", PHI_BACKENDS_PLATFORM="linux-cpu")
    assert text.returncode == 0, text.stderr
    platform_line = text.stdout.splitlines()[1]
    assert platform_line.startswith("platform  linux x86_64, CPU only") and "PHI_BACKENDS_PLATFORM" in platform_line
    assert "chosen: alpha: it fits best (good; next: beta, fallback)" in text.stdout
    plain = cli(site, "backends")
    assert plain.returncode == 0 and "alpha" in plain.stdout and "beta" in plain.stdout


def test_cli_explain_exits_1_when_nothing_can_run(site: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mlx-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    result = cli(site, "backends", "--explain", str(folder))
    assert result.returncode == 1 and "chosen: none: no installed backend reads" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "code", "needles", "what"),
    [
        (
            ["--platform", "windoze"],
            {},
            2,
            ["unknown platform item 'windoze'", "windows-directml"],
            "unknown --platform preset",
        ),
        (
            ["--platform", "os=linux,arch=x86_64,beta=cdua"],
            {},
            2,
            ["unknown engine feature 'cdua' for beta"],
            "unknown engine feature in --platform",
        ),
        (
            [],
            {"PHI_BACKENDS_PLATFORM": "apple-silicone"},
            2,
            ["PHI_BACKENDS_PLATFORM", "did you mean 'apple-silicon'"],
            "unknown preset in PHI_BACKENDS_PLATFORM",
        ),
        (
            ["--prefer", "alpha,gamma"],
            {},
            2,
            ["unknown backend 'gamma' in the backend preference order", "known backends"],
            "unknown backend in --prefer",
        ),
    ],
)
def test_cli_bad_explain_input(
    site: Path, args: list[str], env: dict[str, str], code: int, needles: list[str], what: str
) -> None:
    result = cli(site, "backends", "--explain", "phi3", *args, **env)
    expect_cli_error(result, code, *needles, what=what)


def test_cli_platform_without_explain(site: Path) -> None:
    expect_cli_error(
        cli(site, "backends", "--platform", "linux-cpu"),
        2,
        "add --explain",
        what="backends --platform without --explain",
    )


def test_cli_run_with_a_backend_that_does_not_read_the_file(site: Path, gguf: Path) -> None:
    result = cli(site, "run", "--model", str(gguf), "--backend", "alpha", "hi")
    assert "never loaded" in result.stderr, "alpha reads GGUF files: the choice lets it through to load()"
    folder = site / "onnx-model"
    folder.mkdir()
    (folder / "genai_config.json").write_text("{}")
    expect_cli_error(
        cli(site, "run", "--model", str(folder), "--backend", "alpha", "hi"),
        2,
        "is an ONNX Runtime GenAI folder, which the alpha backend does not read",
        "use the beta backend for it",
        what="run --backend with a model in a format the backend does not read",
    )
