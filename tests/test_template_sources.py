"""Reading a model's own chat template from a Hugging Face folder, in transformers' order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi_backends import TemplateError
from phi_backends.formats.folder_template import read_folder_template
from phi_backends.templates import jinja_template
from tests.bad_inputs import expect_api_error

PHI3 = "{% for message in messages %}{{'<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"


def write_config(folder: Path, **extra: object) -> None:
    config = {"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "<|endoftext|>", **extra}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def test_tokenizer_config_template_and_tokens(tmp_path: Path) -> None:
    write_config(tmp_path, chat_template=PHI3)
    found = read_folder_template(tmp_path)
    assert (found.source, found.bos_token, found.eos_token, found.origin) == (
        PHI3,
        "<s>",
        "<|endoftext|>",
        "tokenizer_config.json",
    )
    rendered = jinja_template(found.source or "", bos_token=found.bos_token, eos_token=found.eos_token)
    assert rendered.render([{"role": "user", "content": "Hi"}]) == "<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_chat_template_jinja_wins_and_named_lists_use_default(tmp_path: Path) -> None:
    write_config(tmp_path, chat_template=[{"name": "tool_use", "template": "x"}, {"name": "default", "template": PHI3}])
    assert read_folder_template(tmp_path).source == PHI3
    (tmp_path / "chat_template.jinja").write_text("{{ 'jinja file' }}")
    found = read_folder_template(tmp_path)
    assert found.source == "{{ 'jinja file' }}" and found.origin == "chat_template.jinja"


def test_no_template_and_broken_files(tmp_path: Path) -> None:
    assert read_folder_template(tmp_path).source is None
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TemplateError) as info:
        read_folder_template(tmp_path)
    what = "a model folder whose tokenizer_config.json is not JSON"
    expect_api_error(info.value, TemplateError, "not valid JSON", what=what)
    write_config(tmp_path, chat_template=[{"name": "tool_use", "template": "x"}])
    with pytest.raises(TemplateError) as info:
        read_folder_template(tmp_path)
    what = "a tokenizer_config.json with named chat templates but none called 'default'"
    expect_api_error(info.value, TemplateError, "'default' entry", what=what)
