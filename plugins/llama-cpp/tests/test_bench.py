"""``phi-backends bench`` on llama.cpp with the offline SmolLM2 Q4_1 GGUF, and its ``--plot`` chart
(this session installs the ``plot`` extra; the core's tests cover the rest on the scripted backend)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_bench_measures_llama_cpp_and_draws_the_chart(smollm2: Path, tmp_path: Path) -> None:
    chart = tmp_path / "out.png"
    args = ("bench", str(smollm2), "-b", "llama-cpp", "-p", "32", "-n", "8", "-r", "2", "--json", "--plot", str(chart))
    result = run_cli(*args, timeout=300)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["model"], row["backend"], row["p"], row["n"]) == (smollm2.name, "llama-cpp", 32, 8)
    assert row["generated_tokens"] == [8, 8]  # a raw continuation of prose: greedy runs to n
    pp, tg, ttft = row["prompt_tokens_per_second"], row["decode_tokens_per_second"], row["time_to_first_token_ms"]
    assert all(v > 0 for v in pp["values"] + tg["values"] + ttft["values"])
    # The first token comes once the 32-token prompt is processed: the two figures agree.
    for rate, ms in zip(pp["values"], ttft["values"], strict=True):
        assert 32 / rate * 1000 <= ms * 1.01
    # A 135M model decodes more than 1 token/s and fewer than 100,000 anywhere; the file is 98 MB.
    assert 1 < tg["mean"] < 100_000 and 1 < pp["mean"] < 1_000_000
    assert 90 < row["peak_rss_mib"] < 4096
    assert chart.read_bytes()[:8] == PNG_SIGNATURE and chart.stat().st_size > 5000
