"""Hostile chat templates inside model files, through every backend and both entry points.

Each payload of :mod:`tests.reliability.payloads` is put where each backend reads a model's
chat template (llama-cpp: the GGUF's ``tokenizer.chat_template``; onnx and mlx: the folder's
``tokenizer_config.json``), then run through ``pb.load(...).generate(...)`` in this process and
through ``phi-backends run`` in a child process. Every run must end with no marker file, no
process started, and either one line naming the chat template (exit 1) or the safely rendered
prompt, within the bounds below (docs/security.md explains them).
"""

from __future__ import annotations

import resource
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import phi_backends as pb
from phi_backends.errors import TemplateError
from phi_backends.templates.sandbox import (
    MAX_BUILT_BYTES,
    MAX_RENDER_SECONDS,
    MAX_STEPS,
    JinjaChatTemplate,
    jinja_template,
)
from tests.bad_inputs import expect_cli_error
from tests.reliability.conftest import BACKENDS, Figures, need_backend
from tests.reliability.model_copies import folder_with_template, gguf_with_template
from tests.reliability.payloads import MESSAGES, PAYLOADS, PROMPT, Payload
from tests.reliability.processes import Measured, max_rss_mib, run_measured

# The bounds this suite holds every hostile template to (docs/security.md).
#: generate() of a template the sandbox stops: its wall-clock bound, plus one C-level operation and noise.
RENDER_SECONDS = MAX_RENDER_SECONDS + 2.0
#: pb.load(): the engine's own load, plus compiling the template and detection's probe renders.
LOAD_SECONDS = 30.0
#: `phi-backends run`, start to exit: importing the engine (mlx-lm takes ~4 s alone), loading, rendering.
CLI_SECONDS = 90.0
#: Peak memory above the same run with the model's own template: the sandbox's MAX_BUILT_BYTES
#: (256 MiB) plus the largest single value (16 MiB) and the interpreter's slack.
MEMORY_MARGIN_MIB = 400.0

CONFIG = pb.SamplingConfig(max_tokens=4, temperature=0)
CLI_ARGS = ("--max-tokens", "4", "--temperature", "0", PROMPT)


def hostile_model(backend: str, model: Path, template: str, folder: Path) -> Path:
    """A copy of ``model`` whose chat template is ``template``, where ``backend`` reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "llama-cpp":
        return gguf_with_template(model, folder / "hostile.gguf", template)
    return folder_with_template(model, folder / "hostile", template)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# -- every payload through `phi-backends run`, two processes at a time ---------------------------------


def _cli_case(backend: str, model: Path, payload: Payload | None, folder: Path) -> tuple[Measured, bool]:
    marker = folder / "pwned"
    path = model if payload is None else hostile_model(backend, model, payload.template(marker), folder)
    try:
        return run_measured("run", "-m", str(path), "-b", backend, *CLI_ARGS, timeout=CLI_SECONDS), marker.exists()
    finally:
        if payload is not None:
            _remove(path)


@pytest.fixture(scope="module")
def cli_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[Any, Any]:
    """(payload name or None for the model's own template, backend) -> (the run, marker created?).

    Run up front, two at a time: most of each run is importing the engine, and this keeps the
    suite's time in check on two cores. Backends that cannot run here are left out (their
    tests skip, or fail under --require-engines).
    """
    jobs = {}
    for backend, fixture in BACKENDS.items():
        try:
            need_backend(backend)
        except pytest.skip.Exception:
            continue
        model: Path = request.getfixturevalue(fixture)
        for payload in (None, *PAYLOADS):
            name = payload.name if payload else "own-template"
            jobs[(name if payload else None, backend)] = (
                backend, model, payload, tmp_path_factory.mktemp(f"cli-{backend}-{name}")
            )  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_cli_case, *job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


# -- the in-process half, and the checks -------------------------------------------------------------------


def _in_process(backend: str, path: Path, payload: Payload, figures: Figures) -> None:
    case = f"{payload.name}/{backend}"
    start = time.monotonic()
    try:
        generator = pb.load(str(path), backend=backend)
    except TemplateError as error:
        assert payload.refused_at_load, f"refused at load: {error}"
        _check_refusal(str(error), payload)
        figures.time("pb.load() refusing a template", time.monotonic() - start, case)
        return
    loaded = time.monotonic()
    assert loaded - start < LOAD_SECONDS
    figures.time("pb.load() of a hostile model", loaded - start, case)
    with generator:
        assert not payload.refused_at_load, "a template the sandbox cannot compile was accepted"
        # detection did not swap in a built-in: the model's own template is what is rendered, sandboxed
        assert isinstance(generator.template, JinjaChatTemplate), generator.template
        if payload.renders is not None:
            assert generator.render(MESSAGES) == payload.renders
            completion = generator.generate(MESSAGES, CONFIG)
            assert completion.usage.completion_tokens <= 4
            return
        with pytest.raises(TemplateError) as info:
            generator.generate(MESSAGES, CONFIG)
        rendered = time.monotonic() - loaded
        assert rendered < RENDER_SECONDS, f"the template ran {rendered:.1f} s"
        figures.time("generate() stopping a hostile template", rendered, case)
        _check_refusal(str(info.value), payload)


def _check_refusal(message: str, payload: Payload) -> None:
    assert "\n" not in message and message.startswith("the model's chat template "), message
    assert payload.needle in message, (payload.needle, message)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.name)
def test_hostile_template(
    payload: Payload,
    backend_model: tuple[str, Path],
    cli_runs: dict[Any, Any],
    tmp_path: Path,
    watch: Any,
    figures: Figures,
) -> None:
    backend, model = backend_model
    case = f"{payload.name}/{backend}"
    marker = tmp_path / "pwned"
    path = hostile_model(backend, model, payload.template(marker), tmp_path / "model")
    before = max_rss_mib(resource.getrusage(resource.RUSAGE_SELF))
    watch.active = marker
    try:
        _in_process(backend, path, payload, figures)
    finally:
        watch.active = None
        _remove(path)
    grown = max_rss_mib(resource.getrusage(resource.RUSAGE_SELF)) - before
    figures.count(f"in-process runs ({backend})")
    figures.memory("peak memory growth, in-process", grown, case)
    escaped = marker.exists() or watch.seen
    if escaped:
        figures.escapes.append(f"{case} in-process: {watch.seen}")
    assert not marker.exists() and watch.seen == []
    assert grown < MEMORY_MARGIN_MIB, f"this process grew by {grown:.0f} MiB"

    run, created = cli_runs[(payload.name, backend)]
    baseline, _ = cli_runs[(None, backend)]
    figures.count(f"CLI runs ({backend})")
    figures.time(f"phi-backends run ({backend})", run.seconds, payload.name)
    figures.time(f"phi-backends run, CPU time ({backend})", run.cpu_seconds, payload.name)
    figures.count(f"CLI CPU seconds, in all ({backend})", run.cpu_seconds)
    figures.memory(f"CLI peak memory over the model's own template ({backend})", run.peak_rss_mib - baseline.peak_rss_mib,
                   payload.name)  # fmt: skip
    if run.crashed:
        figures.crashes.append(f"{case} CLI: {run.result.returncode}")
    if created:
        figures.escapes.append(f"{case} CLI")
    assert not created, "the payload created its marker file"
    if payload.renders is None:
        expect_cli_error(run.result, 1, "chat template", payload.needle, what=payload.what)
    else:
        assert run.result.returncode == 0 and run.result.stderr == "", run.result.stderr
    assert run.seconds < CLI_SECONDS
    assert run.peak_rss_mib < baseline.peak_rss_mib + MEMORY_MARGIN_MIB, (run.peak_rss_mib, baseline.peak_rss_mib)


def test_the_models_own_template_runs(cli_runs: dict[Any, Any]) -> None:
    """The baseline runs (each backend's unmodified model) succeed, so the comparisons above mean something."""
    for backend in BACKENDS:
        need_backend(backend)
        run, _ = cli_runs[(None, backend)]
        assert run.result.returncode == 0 and run.result.stdout.strip(), run.result.stderr


# -- bounds this suite found missing, checked on the sandbox directly ---------------------------------


def _refusal(source: str) -> tuple[str, float, float]:
    """(message, seconds, peak memory growth in MiB) of rendering ``source``, which must be refused."""
    before = max_rss_mib(resource.getrusage(resource.RUSAGE_SELF))
    start = time.monotonic()
    with pytest.raises(TemplateError) as info:
        jinja_template(source, bos_token=None, eos_token=None).render(MESSAGES)
    seconds = time.monotonic() - start
    return str(info.value), seconds, max_rss_mib(resource.getrusage(resource.RUSAGE_SELF)) - before


@pytest.mark.parametrize(
    "source",
    [
        # each statement builds a new 16 MB string and keeps it: no loop, so no step is counted
        "".join("{% set v" + str(i) + " = '\U0001f600' * 3999999 %}" for i in range(100)),
        # a list that grows by one fresh 16 MB string per iteration
        "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + ['\U0001f600' * 3999999] %}"
        "{% endfor %}",
        # slices copy: 4 MB per iteration
        "{% set big = '\U0001f600' * 3999999 %}{% set ns = namespace(l=[]) %}"
        "{% for i in range(1000) %}{% set ns.l = ns.l + [big[::-1]] %}{% endfor %}",
        # split makes a list of fresh strings
        "{% set big = 'a ' * 1999999 %}{% set ns = namespace(l=[]) %}"
        "{% for i in range(100) %}{% set ns.l = ns.l + [big.split()] %}{% endfor %}",
    ],
    ids=["straight-line sets", "growing list", "slices", "split"],
)
def test_what_a_template_keeps_alive_is_bounded(source: str) -> None:
    message, seconds, grown = _refusal(source)
    assert f"built more than {MAX_BUILT_BYTES >> 20} MiB" in message
    assert seconds < RENDER_SECONDS
    assert grown < MEMORY_MARGIN_MIB


@pytest.mark.parametrize(
    "source",
    [
        "{% set s = '\U0001f600 ' * 1999999 %}{{ s|sort|length }}",  # a Python key function per character: 16 s
        "{% set s = 'see http://x.io ' * 249999 %}{{ s|urlize|length }}",  # a Python loop per word: 12 s
        "{% set s = '\U0001f600 ' * 1999999 %}{{ s|select|list|length }}",  # a list of 4M fresh strings: 350 MB
        "{% set s = range(100000)|list %}{{ (s|string)|urlize|length }}",  # the text of a list
    ],
    ids=["sort", "urlize", "select", "urlize-of-a-list"],
)
def test_one_filter_call_cannot_outlast_the_clock(source: str) -> None:
    message, seconds, grown = _refusal(source)
    assert f"more than {MAX_STEPS:,} loop iterations and calls (the " in message
    assert seconds < 1.0
    assert grown < MEMORY_MARGIN_MIB


def test_templates_in_the_folder_files_reach_the_sandbox_too(tiny_phi3_onnx: Path, tmp_path: Path) -> None:
    """chat_template.jinja and chat_template.json (read before tokenizer_config.json) are rendered the same way."""
    need_backend("onnx")
    payload = next(p for p in PAYLOADS if p.name == "cve_2024_34359")
    for place in ("chat_template.jinja", "chat_template.json"):
        marker = tmp_path / f"pwned-{place}"
        folder = folder_with_template(tiny_phi3_onnx, tmp_path / place, payload.template(marker), place=place)
        with pb.load(str(folder), backend="onnx") as generator, pytest.raises(TemplateError) as info:
            generator.generate(MESSAGES, CONFIG)
        _check_refusal(str(info.value), payload)
        assert not marker.exists()


def test_a_hostile_template_does_not_stop_a_chosen_one(tiny_phi3: Path, tmp_path: Path) -> None:
    """With --template, the model's own (hostile) template is never rendered, and the model still works."""
    need_backend("llama-cpp")
    payload = next(p for p in PAYLOADS if p.name == "disguised_phi3")
    marker = tmp_path / "pwned"
    path = gguf_with_template(tiny_phi3, tmp_path / "hostile.gguf", payload.template(marker))
    run = run_measured("run", "-m", str(path), "-b", "llama-cpp", "--template", "phi3", *CLI_ARGS)
    assert run.result.returncode == 0 and run.result.stderr == "", run.result.stderr
    assert run.result.stdout.startswith("Ice hockey")
    assert not marker.exists()
