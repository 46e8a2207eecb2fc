"""``phi_backends.server`` on llama.cpp through the real ``openai`` client, sync and async, against
the real app under uvicorn on 127.0.0.1: the tiny Phi-3 GGUF, 4 sequences. Every answer is
checked against what the library gives for the same call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest

import phi_backends as pb
from phi_backends.server import create_app
from phi_backends.testing import SCRIPT_TEXT
from phi_backends.testing.schemas import TOOL_SCHEMAS, TOOLS
from phi_backends.testing.server import serving

USER = [{"role": "user", "content": "Write a haiku about ice hockey"}]


@pytest.fixture(scope="module")
def gen(tiny_phi3: Path) -> Iterator[pb.Generator]:
    with pb.load(str(tiny_phi3), backend="llama-cpp", n_threads=2, n_seq_max=4) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def client(gen: pb.Generator) -> Iterator[openai.OpenAI]:
    with serving(create_app({"tiny": gen})) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def _greedy(gen: pb.Generator, **fields: object) -> pb.SamplingConfig:
    return gen.sampling.replace(temperature=0, max_tokens=64, **fields)


def test_chat_and_its_stream_answer_as_the_library_with_usage(client: openai.OpenAI, gen: pb.Generator) -> None:
    alone = gen.generate(USER, _greedy(gen))
    out = client.chat.completions.create(model="tiny", messages=USER, temperature=0, max_tokens=64)  # type: ignore[arg-type]
    assert (
        (out.choices[0].message.content, out.choices[0].finish_reason) == (alone.text, "stop") == (SCRIPT_TEXT, "stop")
    )
    assert out.usage is not None and (out.usage.prompt_tokens, out.usage.completion_tokens) == (
        alone.usage.prompt_tokens,
        alone.usage.completion_tokens,
    )
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=USER, temperature=0, max_tokens=64, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == SCRIPT_TEXT
    assert not chunks[-1].choices and chunks[-1].usage == out.usage


def test_seeds_stops_and_n_choices_are_the_librarys(client: openai.OpenAI, gen: pb.Generator) -> None:
    config = gen.sampling.replace(temperature=0.9, top_p=0.95, max_tokens=16)  # the server's defaults besides
    alone = [gen.generate(USER, config.replace(seed=seed)).text for seed in (7, 8)]
    fields = {"temperature": 0.9, "top_p": 0.95, "max_tokens": 16}
    one = client.chat.completions.create(model="tiny", messages=USER, seed=7, **fields)  # type: ignore[arg-type, call-overload]
    assert one.choices[0].message.content == alone[0]
    two = client.chat.completions.create(model="tiny", messages=USER, seed=7, n=2, **fields)  # type: ignore[arg-type, call-overload]
    assert [c.message.content for c in two.choices] == alone  # choice i: seed + i, run together
    stopped = client.chat.completions.create(model="tiny", messages=USER, temperature=0, stop=["frozen"])  # type: ignore[arg-type]
    assert (
        stopped.choices[0].message.content == gen.generate(USER, _greedy(gen, stop=["frozen"])).text == "Ice hockey on "
    )


def test_logprobs_are_the_librarys(client: openai.OpenAI, gen: pb.Generator) -> None:
    alone = gen.generate(USER, _greedy(gen, logprobs=True, top_logprobs=3))
    out = client.chat.completions.create(model="tiny", messages=USER, temperature=0, logprobs=True, top_logprobs=3)  # type: ignore[arg-type]
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and alone.logprobs is not None
    assert [bytes(e.bytes or ()) for e in content] == [gen.token_bytes(e.token) for e in alone.logprobs]
    assert [round(e.logprob, 4) for e in content] == [round(e.logprob, 4) for e in alone.logprobs]
    assert (
        b"".join(bytes(e.bytes or ()) for e in content).decode().strip() == SCRIPT_TEXT
    )  # SentencePiece's leading space
    assert all(len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token for e in content)


def test_json_schema_and_tool_calls_validate(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"goals": {"type": "integer"}}, "required": ["goals"]}
    out = client.chat.completions.create(
        model="tiny", messages=USER, seed=3, max_tokens=80,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "score", "schema": schema}},
    )  # fmt: skip
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        called = client.chat.completions.create(
            model="tiny", messages=USER, tools=TOOLS, tool_choice=choice, seed=5, max_tokens=400,  # type: ignore[arg-type]
        )  # fmt: skip
        assert called.choices[0].finish_reason == "tool_calls"
        for call in called.choices[0].message.tool_calls or []:
            jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS[call.function.name])  # type: ignore[union-attr]


def test_async_clients_at_once_each_get_the_librarys_text(client: openai.OpenAI, gen: pb.Generator) -> None:
    config = gen.sampling.replace(temperature=0.8, max_tokens=20)
    seeds = [11, 12, 13, 14, 11]
    alone = [gen.generate(USER, config.replace(seed=seed)).text for seed in seeds]

    async def main() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=str(client.base_url), api_key="unused", max_retries=0)

        async def one(seed: int) -> str:
            out = await aclient.chat.completions.create(
                model="tiny", messages=USER, seed=seed, temperature=0.8, max_tokens=20,  # type: ignore[arg-type]
            )  # fmt: skip
            return str(out.choices[0].message.content)

        return await asyncio.gather(*(one(seed) for seed in seeds))

    assert asyncio.run(main()) == alone


def test_completions_of_text_and_token_ids(client: openai.OpenAI, gen: pb.Generator) -> None:
    ids = gen.prompt_ids(USER)
    by_ids = client.completions.create(model="tiny", prompt=ids, temperature=0, max_tokens=64)
    by_text = client.completions.create(model="tiny", prompt=gen.render(USER), temperature=0, max_tokens=64)
    assert by_ids.choices[0].text == by_text.choices[0].text == SCRIPT_TEXT
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)


@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"model": "gpt-4o"}, 404, "is not served here"),
        ({"messages": [{"role": "user", "content": "x " * 5000}]}, 400, "context window"),
        ({"extra_body": {"mirostat": 2}}, 400, "mirostat is not a field"),
        ({"temperature": 3}, 400, "temperature"),
    ],
)
def test_errors_have_their_status_and_the_server_goes_on(
    client: openai.OpenAI, fields: dict[str, object], status: int, needle: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**{"model": "tiny", "messages": USER, **fields})  # type: ignore[call-overload]
    assert caught.value.status_code == status and needle in caught.value.message
    out = client.chat.completions.create(model="tiny", messages=USER, temperature=0)  # type: ignore[arg-type]
    assert out.choices[0].message.content == SCRIPT_TEXT
