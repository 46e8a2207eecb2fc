"""Running ``phi_backends.server`` as an operator does, against the real app under uvicorn on
127.0.0.1: models loading after the server starts (``/health`` 503 until then), a model that fails
to load, several models, ``/metrics``, the limits (messages, ``max_tokens``, time, a chunked body)
and CORS. The scripted tiny Phi-3 stands in for an engine."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from phi_backends.errors import PhiBackendsError
from phi_backends.generator import Generator
from phi_backends.server import create_app
from phi_backends.server.limits import Limits
from phi_backends.testing import SCRIPT_TEXT, scripted_generator, write_script_model
from phi_backends.testing.server import serving

USER = [{"role": "user", "content": "Write a haiku about ice hockey"}]


def _loader(path: Path, kind: str = "tiny_phi3", gate: threading.Event | None = None) -> Callable[[], Generator]:
    """What loads a script model at ``path`` (after ``gate`` opens), as ``serve`` loads a model."""

    def load() -> Generator:
        if gate is not None:
            gate.wait(30)
        return scripted_generator(path, max_sequences=4)

    return load


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_script_model(tmp_path_factory.mktemp("server") / "tiny-phi3.json", "tiny_phi3")


@pytest.fixture(scope="module")
def gen(tiny: Path) -> Iterator[Generator]:
    with _loader(tiny)() as loaded:
        yield loaded


def _wait_for(url: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while (reply := httpx.get(url + "/health")).status_code != status:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.02)
    return reply


def test_health_is_503_while_a_model_loads_and_requests_are_told_to_retry(tiny: Path) -> None:
    gate = threading.Event()
    heard: list[str] = []
    app = create_app({"tiny": _loader(tiny, gate=gate)}, on_load=lambda name, outcome: heard.append(name))
    with serving(app) as url:
        reply = httpx.get(url + "/health")
        assert (reply.status_code, reply.json()) == (503, {"status": "loading", "models": {"tiny": "loading"}})
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny", messages=USER)  # type: ignore[arg-type]
        assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "1"
        assert "still loading" in caught.value.message and [m.id for m in client.models.list()] == ["tiny"]
        gate.set()
        assert _wait_for(url, 200).json() == {"status": "ok", "models": {"tiny": "ready"}}
        out = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
        assert out.choices[0].message.content == SCRIPT_TEXT and heard == ["tiny"]


def test_a_model_that_fails_to_load_is_reported_and_the_others_are_served(tiny: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    heard: list[tuple[str, str]] = []

    def hear(name: str, outcome: Generator | PhiBackendsError) -> None:
        heard.append((name, type(outcome).__name__))

    app = create_app({"broken": _loader(broken), "tiny": _loader(tiny)}, on_load=hear)
    with serving(app) as url:
        reply = _wait_for(url, 503)
        deadline = time.monotonic() + 30
        while reply.json()["models"] != {"broken": "failed", "tiny": "ready"}:
            assert time.monotonic() < deadline, reply.text
            reply = httpx.get(url + "/health")
        assert reply.status_code == 503 and reply.json()["status"] == "error"
        assert heard == [("broken", "ModelFormatError"), ("tiny", "Generator")]
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="broken", messages=USER)  # type: ignore[arg-type]
        assert caught.value.status_code == 503 and "failed to load" in caught.value.message
        assert "is not valid JSON" in caught.value.message
        out = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
        assert out.choices[0].message.content == SCRIPT_TEXT


def test_several_models_each_answer_under_their_name(gen: Generator, tmp_path: Path) -> None:
    smol = write_script_model(tmp_path / "smollm2.json", "smollm2")
    with scripted_generator(smol, template="chatml") as other:
        alone = other.generate(USER, other.sampling.replace(temperature=0, max_tokens=100)).text
        with serving(create_app({"phi": gen, "smol": other})) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            assert [m.id for m in client.models.list()] == ["phi", "smol"]
            texts = {
                name: client.chat.completions.create(model=name, messages=USER, temperature=0, max_tokens=100)  # type: ignore[arg-type]
                .choices[0]
                .message.content
                for name in ("phi", "smol")
            }
            assert texts == {"phi": SCRIPT_TEXT, "smol": alone} and alone != SCRIPT_TEXT


def _metrics(url: str) -> dict[str, float]:
    """The scraped samples, by name and labels as Prometheus writes them."""
    samples = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def test_metrics_count_requests_tokens_and_the_queue_per_model(gen: Generator) -> None:
    with serving(create_app({"tiny": gen})) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        one = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
        two = client.chat.completions.create(model="tiny", messages=USER, n=2, seed=1, max_tokens=5)  # type: ignore[arg-type]
        streamed = list(
            client.completions.create(model="tiny", prompt="Hello", max_tokens=7, seed=1, stream=True)  # type: ignore[call-overload]
        )
        assert streamed and one.usage is not None and two.usage is not None
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=USER)  # type: ignore[arg-type]
        samples = _metrics(url)
        completion = one.usage.completion_tokens + two.usage.completion_tokens + 7
        assert samples['phi_backends_completion_tokens_total{model="tiny"}'] == completion
        hello = len(gen.prompt_ids("Hello", template=None))
        prompt = one.usage.prompt_tokens + two.usage.prompt_tokens + hello  # the n=2 prompt once
        assert samples['phi_backends_prompt_tokens_total{model="tiny"}'] == prompt
        assert samples['phi_backends_requests_total{kind="chat",model="tiny"}'] == 2
        assert samples['phi_backends_requests_total{kind="completion",model="tiny"}'] == 1
        assert samples['phi_backends_choices_total{finish_reason="length",model="tiny"}'] == 3
        assert samples['phi_backends_choices_total{finish_reason="stop",model="tiny"}'] == 1
        assert samples['phi_backends_time_to_first_token_seconds_count{model="tiny"}'] == 4
        assert samples['phi_backends_http_requests_total{route="/v1/chat/completions",status="200"}'] == 2
        assert samples['phi_backends_http_requests_total{route="/v1/chat/completions",status="404"}'] == 1
        assert samples['phi_backends_model_ready{model="tiny"}'] == 1
        assert samples['phi_backends_requests_in_flight{model="tiny"}'] == 0
        assert samples['phi_backends_sequences_waiting{model="tiny"}'] == 0
        held = client.chat.completions.create(model="tiny", messages=USER, max_tokens=4000, seed=1, stream=True)  # type: ignore[arg-type]
        next(iter(held))
        assert _metrics(url)['phi_backends_requests_in_flight{model="tiny"}'] == 1
        assert _metrics(url)['phi_backends_sequences_running{model="tiny"}'] == 1
        held.close()


@pytest.mark.parametrize("stream", [False, True])
def test_the_limits_on_messages_tokens_and_time(gen: Generator, stream: bool) -> None:
    limits = Limits(max_messages=3, max_tokens=100, request_timeout_s=0.5)
    with serving(create_app({"tiny": gen}, limits=limits)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        cases = [
            ({"messages": USER * 4}, "messages holds 4 messages; this server takes at most 3"),
            ({"messages": USER, "max_tokens": 101}, "generates at most 100 per choice"),
        ]
        for fields, needle in cases:
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="tiny", stream=stream, **fields)  # type: ignore[call-overload]
            assert needle in caught.value.message
        out = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
        assert out.choices[0].message.content == SCRIPT_TEXT  # max_tokens left out: the cap, not the context
    if stream:
        return  # a stream past its time: the test below
    with serving(create_app({"tiny": gen}, limits=Limits(request_timeout_s=0.3))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny", messages=USER, seed=1, max_tokens=4000)  # type: ignore[arg-type]
        assert caught.value.status_code == 504 and "time limit of 0.3 s" in caught.value.message
        assert time.monotonic() - started < 3
        _wait_idle(gen)


def _wait_idle(gen: Generator) -> None:
    deadline = time.monotonic() + 10
    while gen.load != (0, 0):
        assert time.monotonic() < deadline, "a call the server ended kept its sequence"
        time.sleep(0.02)


def test_a_timed_out_stream_ends_with_one_error_event(gen: Generator) -> None:
    with serving(create_app({"tiny": gen}, limits=Limits(request_timeout_s=0.3))) as url:
        body = {"model": "tiny", "messages": USER, "seed": 1, "max_tokens": 4000, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as reply:
            events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
        assert reply.status_code == 200 and len(events) > 2
        last = json.loads(events[-1])
        assert last["error"]["code"] == "timeout" and "[DONE]" not in events
        _wait_idle(gen)


def test_a_chunked_body_over_the_limit_is_413_and_one_under_it_is_served(gen: Generator) -> None:
    with serving(create_app({"tiny": gen}, limits=Limits(max_body_bytes=2048))) as url:

        def chunked(body: bytes) -> Iterator[bytes]:  # no Content-Length: the body comes in chunks
            for i in range(0, len(body), 500):
                yield body[i : i + 500]

        big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
        headers = {"Content-Type": "application/json"}
        reply = httpx.post(url + "/v1/chat/completions", content=chunked(big), headers=headers)
        assert reply.status_code == 413 and "at most 2048 bytes" in reply.json()["error"]["message"]
        small = json.dumps({"model": "tiny", "messages": USER, "temperature": 0}).encode()
        reply = httpx.post(url + "/v1/chat/completions", content=chunked(small), headers=headers, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == SCRIPT_TEXT


def test_cors_is_off_unless_origins_are_given(gen: Generator) -> None:
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    with serving(create_app({"tiny": gen}, api_keys=["sk-x"])) as url:
        reply = httpx.options(url + "/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in reply.headers
    with serving(create_app({"tiny": gen}, api_keys=["sk-x"], cors_origins=["http://localhost:3000"])) as url:
        reply = httpx.options(url + "/v1/chat/completions", headers=preflight)  # a preflight carries no key
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "http://localhost:3000"
        reply = httpx.get(url + "/v1/models", headers={"Origin": "http://evil.example", "Authorization": "Bearer sk-x"})
        assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


def test_bad_requests_are_answered_while_a_stream_goes_on_untouched(gen: Generator) -> None:
    """A malformed body, a huge body and a wrong key each get their status while another client's
    stream is being served, and that stream ends with exactly the text it gets alone."""
    config = gen.sampling.replace(seed=9, max_tokens=600)
    alone = gen.generate(USER, config).text
    with serving(create_app({"tiny": gen}, api_keys=["sk-x"], limits=Limits(max_body_bytes=4096))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-x", max_retries=0)
        stream = client.chat.completions.create(model="tiny", messages=USER, seed=9, max_tokens=600, stream=True)  # type: ignore[arg-type]
        pieces = [c.choices[0].delta.content or "" for c in itertools.islice(stream, 5) if c.choices]
        headers = {"Authorization": "Bearer sk-x", "Content-Type": "application/json"}
        answers = [
            httpx.post(url + "/v1/chat/completions", content=b"{not json", headers=headers).status_code,
            httpx.post(url + "/v1/chat/completions", content=b"x" * 5000, headers=headers).status_code,
            httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sk-wrong"}).status_code,
        ]
        pieces += [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert answers == [400, 413, 401] and "".join(pieces) == alone
