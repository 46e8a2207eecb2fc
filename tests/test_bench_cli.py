"""``phi-backends bench`` run as a user runs it, on the testing kit's scripted backend.

The scripted backend is installed as pip installs a plugin (a module and an entry point on the
subprocess's ``PYTHONPATH``), and its script model is a real model to it: it tokenizes (one token
per byte, BOS first), computes a logit row per step and samples greedily, off its script after a
raw prompt, so every row runs to ``n`` tokens. The engine-backed run (and ``--plot``) is in
plugins/llama-cpp/tests/test_bench.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi_backends.testing import write_script_model
from tests.bad_inputs import expect_cli_error
from tests.cli import run_cli
from tests.test_plugins import install_plugin

SCRIPTED_PLUGIN = '''
"""The testing kit's scripted backend, installed as any plugin is."""
from phi_backends import hookimpl
from phi_backends.testing import ScriptedBackend


@hookimpl
def register_backends(register):
    register(ScriptedBackend())
'''
CONTEXT = 4096  # the tiny_phi3 script model's


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    install_plugin(folder, "phi_scripted", "scripted", "phi_scripted_plugin", SCRIPTED_PLUGIN)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_script_model(tmp_path_factory.mktemp("bench") / "tiny-phi3.json", "tiny_phi3")


def bench(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return run_cli("bench", *args, env=env)


def rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def test_json_has_a_row_per_length_pair_with_every_repetition(site: Path, model: Path) -> None:
    result = bench(site, str(model), "-b", "scripted", "-p", "16,40", "-n", "8", "-n", "12", "-r", "2", "--json")
    found = rows(result)
    assert [(r["p"], r["n"]) for r in found] == [(16, 8), (16, 12), (40, 8), (40, 12)]
    for row in found:
        assert row["model"] == model.name and row["backend"] == "scripted"
        assert row["repetitions"] == 2
        assert row["generated_tokens"] == [row["n"]] * 2  # the figures are over n tokens, not fewer
        for key in ("prompt_tokens_per_second", "decode_tokens_per_second", "time_to_first_token_ms"):
            stat = row[key]
            assert len(stat["values"]) == 2 and all(v > 0 for v in stat["values"]), (key, stat)
            assert stat["mean"] == pytest.approx(sum(stat["values"]) / 2)
            assert stat["sd"] >= 0
        assert row["peak_rss_mib"] > 10  # a Python process with numpy loaded
    assert result.stderr == ""  # progress lines go to a terminal only


def test_table_names_each_row_and_its_figures(site: Path, model: Path) -> None:
    result = bench(site, str(model), "-b", "scripted", "-p", "20", "-n", "6", "-r", "1")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.strip().splitlines()
    assert header.split() == [
        "model",
        "backend",
        "p",
        "n",
        "pp",
        "t/s",
        "tg",
        "t/s",
        "ttft",
        "ms",
        "peak",
        "RSS",
        "MiB",
    ]
    assert len(lines) == 1
    cells = lines[0].split()
    assert cells[:4] == [model.name, "scripted", "20", "6"]
    assert cells[5] == cells[8] == "±" and cells[6] == cells[9] == "0.00"  # sd 0 with one repetition
    assert float(cells[4]) > 0 and float(cells[7]) > 0 and float(cells[10]) > 0 and int(cells[11]) > 0


def test_csv_is_a_header_and_a_row_per_pair(site: Path, model: Path) -> None:
    result = bench(site, str(model), "-b", "scripted", "-p", "12", "-n", "4,5", "-r", "3", "--csv")
    assert result.returncode == 0, result.stderr
    found = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["p"], r["n"], r["repetitions"], r["generated_min"]) for r in found] == [
        ("12", "4", "3", "4"),
        ("12", "5", "3", "5"),
    ]
    for row in found:
        assert float(row["pp_tps_mean"]) > 0 and float(row["tg_tps_mean"]) > 0 and float(row["ttft_ms_mean"]) > 0
        assert float(row["pp_tps_sd"]) >= 0 and float(row["peak_rss_mib"]) > 0


def test_an_option_for_one_backend_reaches_it(site: Path, model: Path) -> None:
    # The scripted engine sleeps `delay` seconds in every step: 20 ms caps decoding at 50 tokens/s.
    lengths = ("-p", "8", "-n", "6", "-r", "1", "--json")
    [named] = rows(bench(site, str(model), "-b", "scripted", "-O", "scripted.delay=0.02", *lengths))
    # no -b: the backend run would choose gets its own options, and another backend's are not its
    [chosen] = rows(bench(site, str(model), "-O", "scripted.delay=0.02", "-O", "llama-cpp.n_threads=1", *lengths))
    [fast] = rows(bench(site, str(model), "-O", "llama-cpp.delay=0.02", *lengths))
    assert named["backend"] == chosen["backend"] == fast["backend"] == "scripted"
    tg = [r["decode_tokens_per_second"]["mean"] for r in (named, chosen, fast)]
    assert tg[0] < 50 and tg[1] < 50 < tg[2], tg


def test_the_model_defaults_to_the_configs_as_in_run(site: Path, model: Path, config_project: Path) -> None:
    (config_project / "phi-backends.toml").write_text(f"model = {json.dumps(str(model))}\n")
    found = rows(bench(site, "-p", "10", "-n", "3", "-r", "1", "--json"))
    assert [(r["model"], r["backend"], r["generated_tokens"]) for r in found] == [(model.name, "scripted", [3])]


@pytest.mark.parametrize(
    ("args", "needles", "what"),
    [
        (
            ["-p", "4090", "-n", "10"],
            ["-p 4090 -n 10 needs 4100 tokens", f"is {CONTEXT}", "n_ctx"],
            "bench -p plus -n past the model's context",
        ),
        (["-p", "0"], ["-p takes token counts of at least 1, got 0"], "bench -p 0"),
        (["-n", "8,0"], ["-n takes token counts of at least 1, got 0"], "bench -n 0 in a list"),
        (["-r", "0"], ["-r takes a number of repetitions of at least 1, got 0"], "bench -r 0"),
        (["-p", "512,abc"], ["-p takes whole numbers such as 512,1024, got 'abc'"], "bench -p with a word in its list"),
        (["-p", "512,,1024"], ["no empty items", "'512,,1024'"], "bench -p with an empty item"),
        (
            ["-p", "1"],
            ["-p 1 leaves no room for text", "use -p 2 or more"],
            "bench -p 1 on a model whose prompts start with BOS",
        ),
        (
            ["--plot", "chart.jpg"],
            ["--plot writes .png or .svg files, got 'chart.jpg'"],
            "bench --plot with an unknown extension",
        ),
        (
            ["-b", "lama-cpp"],
            ["unknown backend 'lama-cpp'", "did you mean 'llama-cpp'"],
            "bench -b with a misspelt backend",
        ),
        (["-O", "delay"], ["--option takes KEY=VALUE, got 'delay'"], "bench -O without =VALUE"),
        (
            ["-O", "bogus=1", "-b", "scripted"],
            ["no option 'bogus'"],
            "bench -O naming an option the backend does not have",
        ),
        (
            ["-b", "scripted", "-O", "llama-cpp.n_threads=2"],
            ["'llama-cpp' is not a backend given with -b (given: scripted)"],
            "bench -O BACKEND.KEY=VALUE for a backend not given with -b",
        ),
        (
            ["-O", "lama-cpp.n_threads=2"],
            ["'lama-cpp' is not a backend; use one of", "llama-cpp", "scripted"],
            "bench -O BACKEND.KEY=VALUE naming no backend",
        ),
        (
            ["-b", "scripted", "-O", "scripted.bogus=1"],
            ["no option 'bogus'"],
            "bench -O BACKEND.KEY=VALUE naming an option that backend does not have",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    site: Path, model: Path, args: list[str], needles: list[str], what: str
) -> None:
    result = bench(site, str(model), "-r", "1", *args)
    expect_cli_error(result, 2, *needles, what=what)
    assert result.stdout == ""  # nothing measured: every check comes before the first row


def test_rows_measured_before_a_later_models_error_are_printed(site: Path, model: Path, tmp_path: Path) -> None:
    # SmolLM2's prompts have no BOS, so one token is a prompt; tiny Phi-3's start with BOS, so it is not.
    smollm2 = write_script_model(tmp_path / "smollm2.json", "smollm2")
    result = bench(site, str(smollm2), str(model), "-p", "1", "-n", "3", "-r", "1", "--json")
    expect_cli_error(result, 2, "-p 1 leaves no room for text", what="bench -p 1 on the second of two models")
    found = json.loads(result.stdout)
    assert [(r["model"], r["p"], r["generated_tokens"]) for r in found] == [(smollm2.name, 1, [3])]


def test_an_unknown_model_is_runs_error(site: Path) -> None:
    result = bench(site, "phi-3-mini-4k-instruc", "-r", "1")
    expect_cli_error(
        result, 2, "unknown model 'phi-3-mini-4k-instruc'", "did you mean", what="bench with a misspelt model"
    )


def test_plot_without_matplotlib_says_what_to_install(site: Path, model: Path, tmp_path: Path) -> None:
    # None in sys.modules is Python's own way to make an import fail, as if the package were not installed.
    code = (
        "import sys; sys.modules['matplotlib'] = None; from phi_backends.cli.main import main; "
        f"sys.exit(main(['bench', {str(model)!r}, '-r', '1', '--plot', {str(tmp_path / 'chart.png')!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    expect_cli_error(
        result, 2, "--plot needs matplotlib", "pip install 'phi-backends[plot]'", what="bench --plot without matplotlib"
    )
    assert not (tmp_path / "chart.png").exists()


def test_the_plot_extra_is_not_a_backend() -> None:
    # The backends a user is told to install come from the package's extras; plot installs matplotlib.
    result = run_cli("backends", "--json")
    assert result.returncode == 0, result.stderr
    assert "plot" not in {row["name"] for row in json.loads(result.stdout)}
    misspelt = run_cli("run", "--backend", "plott", "hi")
    assert "unknown backend 'plott'" in misspelt.stderr and "plot," not in misspelt.stderr
