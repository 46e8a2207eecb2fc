"""``POST /v1/completions`` through the real ``openai`` client against the real app under uvicorn
on 127.0.0.1, on the scripted tiny Phi-3: raw prompts (a string, token ids, a batch), echo, the
legacy logprobs, streaming with usage, and the route's errors."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from phi_backends.generator import Generator
from phi_backends.server import create_app
from phi_backends.testing import SCRIPT_TEXT, scripted_generator, write_script_model
from phi_backends.testing.server import serving

#: A raw prompt: the Phi-3 generation prompt the script answers, written out.
PROMPT = "<|user|>\nWrite a haiku about ice hockey<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generator]:
    tiny = write_script_model(tmp_path_factory.mktemp("server") / "tiny-phi3.json", "tiny_phi3")
    with scripted_generator(tiny, max_sequences=4) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def client(gen: Generator) -> Iterator[openai.OpenAI]:
    with serving(create_app({"tiny": gen})) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_a_raw_prompt_is_continued_as_the_library_does_sixteen_tokens_by_default(
    client: openai.OpenAI, gen: Generator
) -> None:
    out = client.completions.create(model="tiny", prompt=PROMPT, temperature=0)
    alone = gen.generate(PROMPT, gen.sampling.replace(temperature=0, max_tokens=16), template=None)
    assert out.object == "text_completion" and out.choices[0].text == alone.text == SCRIPT_TEXT[:16]
    assert out.choices[0].finish_reason == "length" and out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (alone.usage.prompt_tokens, 16)
    whole = client.completions.create(model="tiny", prompt=PROMPT, temperature=0, max_tokens=500)
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == (SCRIPT_TEXT, "stop")


def test_token_ids_are_fed_as_they_are(client: openai.OpenAI, gen: Generator) -> None:
    ids = gen.prompt_ids([{"role": "user", "content": "Write a haiku about ice hockey"}])
    by_ids = client.completions.create(model="tiny", prompt=ids, temperature=0, max_tokens=500)
    by_text = client.completions.create(model="tiny", prompt=PROMPT, temperature=0, max_tokens=500)
    assert by_ids.choices[0].text == by_text.choices[0].text == SCRIPT_TEXT
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)


def test_a_batch_of_prompts_with_n_choices_each_in_order(client: openai.OpenAI, gen: Generator) -> None:
    ids = gen.prompt_ids([{"role": "user", "content": "Write a haiku about ice hockey"}])
    out = client.completions.create(model="tiny", prompt=[ids, ids[:-3]], n=2, seed=4, max_tokens=6)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    texts = [c.text for c in out.choices]
    assert texts[0] != texts[1]  # choice i: seed + i
    again = client.completions.create(model="tiny", prompt=ids, n=1, seed=5, max_tokens=6)
    assert again.choices[0].text == texts[1]
    assert out.usage is not None and out.usage.prompt_tokens == len(ids) + len(ids) - 3  # each prompt once
    assert out.usage.completion_tokens == 4 * 6


def test_echo_and_the_legacy_logprobs(client: openai.OpenAI) -> None:
    echoed = client.completions.create(model="tiny", prompt=PROMPT, temperature=0, max_tokens=5, echo=True)
    assert echoed.choices[0].text == PROMPT + SCRIPT_TEXT[:5]
    out = client.completions.create(model="tiny", prompt=PROMPT, temperature=0, max_tokens=8, logprobs=3)
    logprobs = out.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None and logprobs.top_logprobs is not None
    assert "".join(logprobs.tokens) == out.choices[0].text == SCRIPT_TEXT[:8]
    assert logprobs.text_offset == list(range(8))  # byte tokens: one character each
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs or [], logprobs.top_logprobs, strict=True):
        assert logprob <= 0 and len(top) == 3 and max(top, key=top.__getitem__) == token


def test_streaming_gives_the_same_text_and_usage_last(client: openai.OpenAI) -> None:
    fields = {"model": "tiny", "prompt": PROMPT, "temperature": 0, "max_tokens": 500}
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **fields))  # type: ignore[call-overload]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == SCRIPT_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    whole = client.completions.create(**fields)  # type: ignore[call-overload]
    assert chunks[-1].usage is not None and chunks[-1].usage == whole.usage


@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"prompt": ""}, 400, "the prompt is empty"),
        ({"prompt": []}, 400, "prompt is an empty list"),
        ({"prompt": [1, 10**9]}, 400, "not a token id"),
        ({"prompt": [1, "a"]}, 400, "prompt"),
        ({"suffix": "end"}, 400, "suffix is not supported"),
        ({"best_of": 3}, 400, "best_of must equal n"),
        ({"echo": True, "logprobs": 1}, 400, "echo with logprobs"),
        ({"logprobs": 21}, 400, "logprobs"),
        ({"prompt": "x " * 5000}, 400, "context window"),
        ({"model": "gpt-3.5-turbo-instruct"}, 404, "is not served here"),
        ({"extra_body": {"guided_json": {}}}, 400, "guided_json is not a field"),
    ],
)  # fmt: skip
def test_bad_requests_get_their_status_and_the_server_keeps_serving(
    client: openai.OpenAI, fields: dict[str, object], status: int, needle: str
) -> None:
    request = {"model": "tiny", "prompt": PROMPT, **fields}
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as caught:
            client.completions.create(stream=stream, **request)  # type: ignore[call-overload]
        assert caught.value.status_code == status and needle in caught.value.message, caught.value.message
    assert client.completions.create(model="tiny", prompt=PROMPT, temperature=0).choices[0].text == SCRIPT_TEXT[:16]
