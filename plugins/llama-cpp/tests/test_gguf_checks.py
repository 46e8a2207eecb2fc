"""llama.cpp's crash preconditions: well-formed GGUF files that the kit's reader accepts and that
llama.cpp would abort, crash or hang on, refused by the plugin's ``check_for_llama_cpp``.

The same refusals through the real CLI and llama.cpp itself are in
tests/reliability/test_corrupt_models.py; the kit's format checks are in tests/test_gguf.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from phi_backends_llama_cpp.gguf_checks import check_for_llama_cpp

from phi_backends.errors import ModelFormatError
from phi_backends.formats.gguf import read_gguf
from tests.gguf_files import ARR, F32, FAST, I32, STR, U32, U64, build_gguf, check_message, small_model

F64 = 12


def _check(path: Path) -> None:
    check_for_llama_cpp(read_gguf(path))


# name -> (the bad input in words, how to make the file, words the message must contain)
BROKEN: dict[str, tuple[str, Callable[[], bytes], tuple[str, ...]]] = {
    # moved from tests/test_gguf.py, assertions unchanged: the kit's reader no longer refuses these
    "token types too short": (
        "a GGUF token_type list shorter than the token list",
        lambda: build_gguf(small_model(**{"tokenizer.ggml.token_type": (ARR, (I32, [1, 1]))})),
        ("corrupt", "token_type has 2 entries", "3 tokens"),
    ),
    "scores of the wrong type": (
        "GGUF token scores stored as integers",
        lambda: build_gguf(small_model(**{"tokenizer.ggml.scores": (ARR, (I32, [0, 0, 0]))})),
        ("corrupt", "FLOAT32"),
    ),
    # the other preconditions, in-process (the reliability suite runs them through llama.cpp)
    "merges not strings": (
        "GGUF tokenizer merges stored as integers",
        lambda: build_gguf(small_model(**{"tokenizer.ggml.merges": (ARR, (U32, [1, 2]))})),
        ("corrupt", "tokenizer.ggml.merges is not an array of strings"),
    ),
    "duplicate tokens": (
        "a GGUF vocabulary with the same token text twice",
        lambda: build_gguf(
            small_model(
                **{
                    "tokenizer.ggml.tokens": (ARR, (STR, ["<unk>", "a", "a"])),
                }
            )
        ),
        ("corrupt", "holds the token 'a' twice"),
    ),
    "empty token named like another": (
        "a GGUF vocabulary with an empty token and a token named as llama.cpp renames it",
        lambda: build_gguf(small_model(**{"tokenizer.ggml.tokens": (ARR, (STR, ["<unk>", "", "[EMPTY_1]"]))})),
        ("corrupt", "holds the token '[EMPTY_1]' twice"),
    ),
    "integer weights": (
        "a GGUF weight tensor of integer type I32",
        lambda: build_gguf(small_model(), [("token_embd.weight", (4, 3), 26, 0)], data=b"\0" * 48),
        ("corrupt", "'token_embd.weight'", "I32"),
    ),
    "f64 weights": (
        "a GGUF weight tensor of type F64",
        lambda: build_gguf(small_model(), [("output.weight", (4,), 28, 0)], data=b"\0" * 32),
        ("corrupt", "'output.weight'", "F64"),
    ),
    "0 layers": (
        "a GGUF model of 0 layers",
        lambda: build_gguf(small_model(**{"llama.block_count": (U32, 0)})),
        ("llama.block_count is 0", "1 to 512 layers"),
    ),
    "600 layers": (
        "a GGUF model of 600 layers",
        lambda: build_gguf(small_model(**{"llama.block_count": (U64, 600)})),
        ("llama.block_count is 600",),
    ),
    "context beyond int32": (
        "a GGUF context length beyond int32",
        lambda: build_gguf(small_model(**{"llama.context_length": (U32, 4_000_000_000)})),
        ("llama.context_length is 4000000000", "2,147,483,647"),
    ),
    "norm epsilon nan": (
        "a GGUF norm epsilon that is NaN",
        lambda: build_gguf(small_model(**{"llama.attention.layer_norm_rms_epsilon": (F32, float("nan"))})),
        ("layer_norm_rms_epsilon is nan",),
    ),
    "norm epsilon negative": (
        "a GGUF norm epsilon that is negative (F64)",
        lambda: build_gguf(small_model(**{"llama.attention.layer_norm_epsilon": (F64, -1.0)})),
        ("layer_norm_epsilon is -1.0",),
    ),
    "rope dims 0": (
        "a GGUF RoPE dimension count of 0",
        lambda: build_gguf(small_model(**{"llama.rope.dimension_count": (U32, 0)})),
        ("rope.dimension_count is 0",),
    ),
    "rope dims odd": (
        "a GGUF RoPE dimension count that is odd",
        lambda: build_gguf(small_model(**{"llama.rope.dimension_count": (U32, 15)})),
        ("rope.dimension_count is 15",),
    ),
    "rope dims beyond a head": (
        "a GGUF RoPE dimension count larger than a head",
        lambda: build_gguf(
            small_model(
                **{
                    "llama.rope.dimension_count": (U32, 64),
                    "llama.embedding_length": (U32, 128),
                    "llama.attention.head_count": (U32, 4),
                }
            )
        ),
        ("rope.dimension_count is 64", "head size 32"),
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_llama_cpp_precondition(case: str, tmp_path: Path) -> None:
    what, make, words = BROKEN[case]
    path = tmp_path / "model.gguf"
    path.write_bytes(make())
    start = time.perf_counter()
    with pytest.raises(ModelFormatError) as caught:
        _check(path)
    assert time.perf_counter() - start < FAST
    check_message(caught.value, path, words, what)


def test_the_kit_reads_these_files(tmp_path: Path) -> None:
    """They are well-formed GGUF: only llama.cpp's check refuses them, not the kit's reader."""
    for case, (_, make, _) in BROKEN.items():
        path = tmp_path / f"{case}.gguf"
        path.write_bytes(make())
        assert read_gguf(path).path == path, case


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("plain", {}),
        # llama.cpp compares the bytes stored: two invalid UTF-8 tokens that decode alike are two tokens
        ("invalid utf-8 tokens", {"tokenizer.ggml.tokens": (ARR, (STR, [b"\xff", b"\xfe", b"</s>"]))}),
        # llama.cpp renames an empty token "[EMPTY_<id>]": two empty tokens are two tokens
        ("empty tokens", {"tokenizer.ggml.tokens": (ARR, (STR, ["<unk>", "", ""]))}),
        ("usual hyperparameters", {"llama.block_count": (U32, 30), "llama.rope.dimension_count": (U32, 96)}),
        ("empty arrays of any type", {"tokenizer.ggml.merges": (ARR, (U32, []))}),
        ("epsilon 0", {"llama.attention.layer_norm_rms_epsilon": (F32, 0.0)}),
        ("hyperparameters of odd types are llama.cpp's to refuse", {"llama.block_count": (STR, "0")}),
    ],
)
def test_files_llama_cpp_loads_pass(case: str, changes: dict[str, tuple[int, object]], tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(build_gguf(small_model(**changes), [("token_embd.weight", (4, 3), 0, 0)], data=b"\0" * 48))
    _check(path)


def test_smollm2_passes(smollm2: Path) -> None:
    _check(smollm2)


def _vocabulary(tokens: list[str]) -> bytes:
    n = len(tokens)
    return build_gguf(
        small_model(
            **{
                "tokenizer.ggml.tokens": (ARR, (STR, tokens)),
                "tokenizer.ggml.scores": (ARR, (F32, [0.0] * n)),
                "tokenizer.ggml.token_type": (ARR, (I32, [1] * n)),
                "tokenizer.ggml.merges": (ARR, (STR, [f"t o{i}" for i in range(n)])),
            }
        )
    )


def test_checking_a_200k_token_vocabulary_is_fast(tmp_path: Path) -> None:
    """The duplicate check reads every token again (the kit's reader skips them): a set of 200k."""
    tokens = [f"tok{i}" for i in range(200_000)]
    path = tmp_path / "big-vocab.gguf"
    path.write_bytes(_vocabulary(tokens))
    info = read_gguf(path)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        check_for_llama_cpp(info)
        best = min(best, time.perf_counter() - start)
    assert best < FAST
    path.write_bytes(_vocabulary([*tokens[:-1], "tok7"]))
    with pytest.raises(ModelFormatError, match="holds the token 'tok7' twice"):
        _check(path)
