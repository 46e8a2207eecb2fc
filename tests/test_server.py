"""``phi_backends.server`` through the real ``openai`` client against the real app under uvicorn on
127.0.0.1 (started and stopped here), on the scripted tiny Phi-3 (greedy answers the script;
backends run the same app: plugins' tests)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import jsonschema
import openai
import pytest

from phi_backends.generator import Generator
from phi_backends.server import create_app
from phi_backends.server.limits import Limits
from phi_backends.testing import SCRIPT_TEXT, scripted_generator, write_script_model
from phi_backends.testing.schemas import TOOL_SCHEMAS, TOOLS
from phi_backends.testing.server import serving

KEY = "sk-test-key"
USER = [{"role": "user", "content": "Write a haiku about ice hockey"}]


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generator]:
    tiny = write_script_model(tmp_path_factory.mktemp("server") / "tiny-phi3.json", "tiny_phi3")
    with scripted_generator(tiny, max_sequences=4) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def base_url(gen: Generator) -> Iterator[str]:
    with serving(create_app({"tiny": gen}, api_keys=[KEY])) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)


def test_models_and_health(client: openai.OpenAI, base_url: str) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(base_url + "/health").json() == {"status": "ok", "models": {"tiny": "ready"}}  # no key needed


def test_a_greedy_chat_answers_the_script_with_usage(client: openai.OpenAI, gen: Generator) -> None:
    out = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
    choice = out.choices[0]
    assert (choice.message.content, choice.finish_reason, choice.message.role) == (SCRIPT_TEXT, "stop", "assistant")
    alone = gen.generate(USER, gen.sampling.replace(temperature=0, max_tokens=4096)).usage
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (alone.prompt_tokens, alone.completion_tokens)
    assert out.system_fingerprint == "phi-backends:scripted:tiny-phi3.json" and out.model == "tiny"


def test_streaming_gives_the_same_text_and_usage_last(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=USER,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == SCRIPT_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert not chunks[-1].choices and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_seeds_reproduce_and_differ_and_stops_cut(client: openai.OpenAI) -> None:
    def text(**fields: object) -> str:
        out = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, **fields)  # type: ignore[arg-type, call-overload]
        return str(out.choices[0].message.content)

    assert text(seed=5) == text(seed=5) != text(seed=6)
    assert text(temperature=0, stop=["hockey"]) == "Ice "
    assert text(temperature=0, max_completion_tokens=2) == SCRIPT_TEXT[:2]  # byte tokens: one character each


def test_logprobs_spell_the_text_streamed_and_not(client: openai.OpenAI) -> None:
    fields = {"temperature": 0, "logprobs": True, "top_logprobs": 3}
    out = client.chat.completions.create(model="tiny", messages=USER, **fields)  # type: ignore[arg-type, call-overload]
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and "".join(e.token for e in content) == SCRIPT_TEXT
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
        assert bytes(entry.bytes or ()).decode() == entry.token
    chunks = client.chat.completions.create(model="tiny", messages=USER, stream=True, **fields)  # type: ignore[arg-type, call-overload]
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or ()]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in content]


def test_n_choices_run_as_sequences_with_seeds_in_turn(client: openai.OpenAI) -> None:
    fields = {"n": 3, "seed": 11, "max_tokens": 8}
    out = client.chat.completions.create(model="tiny", messages=USER, **fields)  # type: ignore[arg-type, call-overload]
    texts = [c.message.content for c in sorted(out.choices, key=lambda c: c.index)]
    assert len(set(texts)) == 3 and [c.index for c in out.choices] == [0, 1, 2]
    second = client.chat.completions.create(model="tiny", messages=USER, **{**fields, "n": 1, "seed": 12})  # type: ignore[arg-type, call-overload]
    assert second.choices[0].message.content == texts[1]  # choice i has seed + i
    assert out.usage is not None and second.usage is not None
    assert out.usage.prompt_tokens == second.usage.prompt_tokens and out.usage.completion_tokens == 3 * 8
    chunks = client.chat.completions.create(
        model="tiny", messages=USER, stream=True, stream_options={"include_usage": True}, **fields
    )  # type: ignore[arg-type, call-overload]
    streamed = ["", "", ""]
    finishes = []
    usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.index)
    assert streamed == texts and sorted(finishes) == [0, 1, 2]
    assert usage is not None and usage.completion_tokens == 3 * 8


def test_response_format_json_schema_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"goals": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["goals"],
        "additionalProperties": False,
    }
    out = client.chat.completions.create(
        model="tiny", messages=USER, seed=3, max_tokens=60,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "score", "schema": schema}},
    )  # fmt: skip
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)


def test_tool_calls_with_a_named_tool_choice_streamed_and_not(client: openai.OpenAI) -> None:
    fields = {
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "add"}},
        "seed": 2,
        "max_tokens": 300,
    }
    out = client.chat.completions.create(model="tiny", messages=USER, **fields)  # type: ignore[arg-type, call-overload]
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "add" and call.id.startswith("call_")  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS["add"])  # type: ignore[union-attr]
    chunks = list(client.chat.completions.create(model="tiny", messages=USER, stream=True, **fields))  # type: ignore[arg-type, call-overload]
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [(0, "add", call.function.arguments)]  # type: ignore[union-attr]


def test_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI) -> None:
    counts = {}
    for allowed in (True, False):
        out = client.chat.completions.create(
            model="tiny", messages=USER, tools=TOOLS, tool_choice="required", seed=1, max_tokens=600,  # type: ignore[arg-type]
            parallel_tool_calls=allowed,
        )  # fmt: skip
        counts[allowed] = len(out.choices[0].message.tool_calls or [])
        assert out.choices[0].finish_reason == "tool_calls"
    assert counts[False] == 1 < counts[True]  # seed 1 makes several calls when they are allowed


@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"model": "gpt-4o"}, 404, "model 'gpt-4o' is not served here"),
        ({"n": 9}, 400, "n must be 1 to 8"),
        ({"top_logprobs": 2}, 400, "top_logprobs needs logprobs"),
        ({"logprobs": True, "top_logprobs": 30}, 400, "top_logprobs"),
        ({"extra_body": {"mirostat": 2}}, 400, "mirostat is not a field"),
        ({"temperature": -1}, 400, "temperature"),
        ({"tools": TOOLS, "tool_choice": "search"}, 400, "tool_choice names the function 'search'"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, 400, "has name 'a b'"),
        ({"logit_bias": {"99999999": 5}}, 400, "logit_bias names token id 99999999"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "only text parts"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}}, 400, "JSON schema is not valid"),
        ({"messages": [{"role": "user", "content": "x " * 5000}]}, 400, "context window"),
    ],
)  # fmt: skip
def test_bad_requests_get_their_status_and_the_server_keeps_serving(
    client: openai.OpenAI, fields: dict[str, object], status: int, needle: str
) -> None:
    request = {"model": "tiny", "messages": USER, **fields}
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(stream=stream, **request)  # type: ignore[call-overload]
        assert caught.value.status_code == status and needle in caught.value.message, caught.value.message
    assert (
        client.chat.completions.create(model="tiny", messages=USER, temperature=0).choices[0].message.content
        == SCRIPT_TEXT
    )  # type: ignore[arg-type]


def test_a_wrong_key_a_malformed_body_and_a_wrong_path(base_url: str) -> None:
    wrong = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    reply = httpx.post(base_url + "/v1/chat/completions", content=b"{not json", headers=headers)
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    reply = httpx.get(base_url + "/v1/nothing", headers=headers)
    assert reply.status_code == 404 and "error" in reply.json()


def test_concurrent_async_clients_each_get_their_own_text(base_url: str) -> None:
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)

        async def one(seed: int) -> str:
            out = await client.chat.completions.create(model="tiny", messages=USER, seed=seed, max_tokens=10)  # type: ignore[arg-type]
            return str(out.choices[0].message.content)

        return await asyncio.gather(*(one(seed) for seed in (1, 2, 3, 4, 1)))

    texts = asyncio.run(main())
    assert texts[0] == texts[4] and len(set(texts[:4])) == 4


def test_a_client_that_leaves_mid_stream_frees_its_sequence(client: openai.OpenAI, gen: Generator) -> None:
    stream = client.chat.completions.create(model="tiny", messages=USER, max_tokens=2000, seed=1, stream=True)  # type: ignore[arg-type]
    for _ in zip(range(3), stream, strict=False):
        pass
    stream.close()
    deadline = time.monotonic() + 10
    while gen.load != (0, 0) and time.monotonic() < deadline:  # what the server still holds
        time.sleep(0.02)
    assert gen.load == (0, 0)


def test_a_full_queue_answers_503_with_retry_after_and_a_big_body_413(gen: Generator) -> None:
    with serving(create_app({"tiny": gen}, limits=Limits(max_queue=1, max_body_bytes=4096))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        held = client.chat.completions.create(model="tiny", messages=USER, max_tokens=4000, seed=1, stream=True)  # type: ignore[arg-type]
        next(iter(held))
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny", messages=USER, max_tokens=2)  # type: ignore[arg-type]
        assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "1"
        held.close()  # its slot comes back: the next request is served
        deadline = time.monotonic() + 10
        while True:
            try:
                client.chat.completions.create(model="tiny", messages=USER, max_tokens=2)  # type: ignore[arg-type]
                break
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and time.monotonic() < deadline
                time.sleep(0.05)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 5000}])
        assert caught.value.status_code == 413 and "at most 4096" in caught.value.message
