"""A GGUF's weights, dequantized to float32, as a GGUF again (built once, cached).

Why: llama.cpp on a CPU does not compute a Q4_1 model in float32. Each Q4_1 dot product runs
against the activations quantized to Q8_1 (8 bits per value, one scale per 32), so the Q4_1
GGUF and the float32 ONNX and MLX folders built from its dequantized weights are not the same
function (docs/parity.md has the figures). The float32 GGUF holds exactly the numbers those
folders hold (gguf's own dequantizer, the one transformers uses to build them), with every
metadata key, the tokenizer included, copied unchanged, so llama.cpp computes what the others
compute.

Cache: next to the other test models (``$PHI_BACKENDS_FIXTURES`` or ``<repo>/.fixtures``), in a
folder keyed by this file, the source GGUF's bytes and the gguf package's version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from pathlib import Path

__all__ = ["float32_gguf"]


def float32_gguf(source: Path, cache_dir: Path | None = None) -> Path:
    """``source`` with every tensor as float32 (built on first use; a few seconds for SmolLM2)."""
    from tests.fixtures.hf_models import file_digest
    from tests.fixtures.tiny_phi3 import default_cache_dir

    key = hashlib.sha256(
        b"\0".join(
            [
                Path(__file__).read_bytes(),
                file_digest(source).encode(),
                importlib.metadata.version("gguf").encode(),
            ]
        )
    ).hexdigest()[:16]
    name = source.name.split(".")[0]  # SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct
    target = (cache_dir or default_cache_dir()) / f"{name}-gguf-f32-{key}" / f"{name}.F32.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        _write_float32(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _write_float32(source: Path, out: Path) -> None:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(source))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    assert arch is not None, f"{source}: no general.architecture"
    writer = gguf.GGUFWriter(str(out), arch.contents(), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_key_value(field.name, int(gguf.LlamaFileType.ALL_F32), kind)
            continue
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
