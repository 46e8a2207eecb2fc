"""``phi-backends serve`` as a user runs it, on llama.cpp with the tiny Phi-3, through the real
``openai`` client; the server process is started on 127.0.0.1 here and stopped here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

import phi_backends as pb
from phi_backends.testing import SCRIPT_TEXT
from phi_backends.testing.schemas import TOOL_SCHEMAS, TOOLS
from tests.bad_inputs import expect_cli_error
from tests.cli import CLI, run_cli

USER = [{"role": "user", "content": "Write a haiku about ice hockey"}]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PHI_BACKENDS_API_KEYS": "sk-a,sk-b"}
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("# the team's keys\nsk-file\n\n")
    args = [CLI, "serve", "--model", f"tiny={tiny_phi3}", "--model", f"again={tiny_phi3}", "--port", str(port)]
    args += ["-O", "n_threads=2", "--api-key-file", str(keys)]
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /health"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        proc.communicate()


def test_serve_answers_the_openai_client_exactly(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-b", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny", "again"]
    out = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
    assert out.choices[0].message.content == SCRIPT_TEXT and out.choices[0].finish_reason == "stop"
    assert out.system_fingerprint is not None and out.system_fingerprint.startswith("phi-backends:llama-cpp:")
    stream = client.chat.completions.create(model="tiny", messages=USER, temperature=0, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == SCRIPT_TEXT
    fields = {"tools": TOOLS, "tool_choice": "required", "seed": 3, "max_tokens": 400}
    called = client.chat.completions.create(model="tiny", messages=USER, **fields)  # type: ignore[arg-type, call-overload]
    assert called.choices[0].finish_reason == "tool_calls"
    for call in called.choices[0].message.tool_calls or []:
        jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS[call.function.name])  # type: ignore[union-attr]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url + "/v1", api_key="sk-c", max_retries=0).models.list()


@pytest.mark.parametrize(
    ("what", "args", "needles"),
    [
        ("serve --port 70000", ["--port", "70000"], ["--port must be 0 to 65535"]),
        ("serve with a model file that does not exist", ["--model", "./missing.gguf"], ["no such file"]),
        (
            "serve --name with two models",
            ["--model", "a=x.gguf", "--model", "b=y.gguf", "--name", "c"],
            ["--name names one model"],
        ),
        ("serve two models under one name", ["--model", "a={m}", "--model", "a={m}"], ["two models are served as 'a'"]),
        ("serve --model NAME= without a model", ["--model", "a="], ["the model after a= is missing"]),
        (
            "serve --api-key-file that does not exist",
            ["--api-key-file", "./no-keys.txt"],
            ["--api-key-file", "cannot read it"],
        ),
        ("serve --timeout -1", ["--timeout", "-1"], ["--timeout must be 0"]),
        ("serve --max-n 0", ["--max-n", "0"], ["--max-n must be at least 1, got 0"]),
    ],
)
def test_serve_usage_errors_exit_2_before_binding(
    tiny_phi3: Path, what: str, args: list[str], needles: list[str]
) -> None:
    args = [arg.format(m=tiny_phi3) for arg in args]
    model = [] if "--model" in args else ["--model", str(tiny_phi3)]
    expect_cli_error(run_cli("serve", *model, *args), 2, *needles, what=what)


def test_completions_take_text_or_token_ids_and_each_model_answers(base_url: str, tiny_phi3: Path) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-file", max_retries=0)
    prompt = "<|user|>\nWrite a haiku about ice hockey<|end|>\n<|assistant|>\n"
    by_text = client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=200)
    assert (by_text.choices[0].text, by_text.choices[0].finish_reason) == (SCRIPT_TEXT, "stop")
    with pb.load(str(tiny_phi3), backend="llama-cpp", n_threads=2) as gen:
        ids = gen.prompt_ids(USER)
    by_ids = client.completions.create(model="again", prompt=ids, temperature=0, max_tokens=200)
    assert by_ids.choices[0].text == SCRIPT_TEXT and by_ids.usage is not None
    assert by_ids.usage.prompt_tokens == len(ids)
    metrics = httpx.get(base_url + "/metrics", headers={"Authorization": "Bearer sk-a"}).text
    assert 'phi_backends_requests_total{kind="completion",model="again"} 1.0' in metrics


def test_a_model_that_fails_to_load_ends_serve_with_a_one_line_error(tiny_phi3: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_phi3.read_bytes()[: 2**20])  # its header is whole, its tensors are not
    result = run_cli("serve", "--model", str(truncated), "--port", "0")  # the server stops by itself
    *log, last = result.stderr.strip().splitlines()  # uvicorn's lines (it had started), then the error
    assert result.returncode == 1 and "Uvicorn running on http://127.0.0.1:" in "\n".join(log)
    assert last.startswith("phi-backends: error: truncated.gguf is truncated") and "re-download it" in last
    assert "Traceback" not in result.stderr
