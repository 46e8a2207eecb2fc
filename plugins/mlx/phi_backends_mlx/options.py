"""The engine options the MLX backend accepts, validated, with mlx-lm's meaning."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phi_backends.errors import OptionError
from phi_backends.formats.engine_options import option_values, warn_beyond_training

from .model_folder import ModelFolder

DEVICES = ("gpu", "cpu")
#: The widths mx.quantize packs (the KV cache is quantized with it).
KV_BITS = (2, 3, 4, 5, 6, 8)
KV_GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class EngineOptions:
    """mlx-lm settings. ``None`` means "our default", documented per field."""

    device: str | None = None  # "gpu" or "cpu"; default: gpu where MLX has one (Metal, CUDA), else cpu
    n_ctx: int | None = None  # the context window the core enforces; default: config.json's max_position_embeddings
    prefill_step_size: int = 2048  # prompt tokens per forward pass (mlx-lm's default)
    max_kv_size: int | None = None  # a rotating KV cache of this many tokens (mlx-lm's --max-kv-size); None: unbounded
    kv_bits: int | None = None  # quantize the KV cache to this many bits (mlx-lm's --kv-bits); None: full precision
    kv_group_size: int = 64
    quantized_kv_start: int = 5000  # quantize the KV cache once it holds this many tokens
    trust_remote_code: bool = False  # run Python files the model folder asks for (config.json's model_file)

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, devices: tuple[str, ...]) -> EngineOptions:
        """Validate ``options``; ``devices`` are those this machine offers, best first."""
        values = option_values(cls, options, backend="mlx")
        device = str(values.get("device") or devices[0]).lower()
        if device not in DEVICES:
            raise OptionError(f"option device must be one of {', '.join(DEVICES)}, got {device!r}")
        if device not in devices:
            raise OptionError(
                f"device {device!r} is not available to MLX on this machine (it has: {', '.join(devices)}); "
                "use device=cpu, or see `phi-backends backends`"
            )
        parsed = cls(**{**values, "device": device})
        parsed._check_ranges()
        return parsed

    def check_model(self, folder: ModelFolder) -> None:
        """What only the model can tell: mx.quantize groups each head's values, so the group
        size must divide the head size (else generation would fail at the first quantization);
        an n_ctx beyond the training context is a warning."""
        warn_beyond_training("n_ctx", self.n_ctx, folder.context_length)
        head = folder.head_dim
        if self.kv_bits is not None and head is not None and head % self.kv_group_size:
            fits = [str(g) for g in KV_GROUP_SIZES if head % g == 0]
            fix = (
                f"use kv_group_size {' or '.join(fits)}"
                if fits
                else f"no kv_group_size mlx-lm supports ({', '.join(map(str, KV_GROUP_SIZES))}) divides it; "
                "leave kv_bits unset for this model"
            )
            raise OptionError(
                f"kv_bits needs a kv_group_size that divides the model's head size {head}, not kv_group_size "
                f"{self.kv_group_size}; {fix}"
            )

    def _check_ranges(self) -> None:
        if self.n_ctx is not None and self.n_ctx < 16:
            raise OptionError(f"n_ctx must be at least 16, got {self.n_ctx}")
        if self.prefill_step_size < 1:
            raise OptionError(f"prefill_step_size must be at least 1, got {self.prefill_step_size}")
        if self.max_kv_size is not None and self.max_kv_size < 16:
            raise OptionError(f"max_kv_size must be at least 16, got {self.max_kv_size}")
        if self.kv_bits is not None and self.kv_bits not in KV_BITS:
            raise OptionError(f"kv_bits must be one of {', '.join(map(str, KV_BITS))}, got {self.kv_bits}")
        if self.kv_group_size not in KV_GROUP_SIZES:
            raise OptionError(
                f"kv_group_size must be one of {', '.join(map(str, KV_GROUP_SIZES))}, got {self.kv_group_size}"
            )
        if self.quantized_kv_start < 0:
            raise OptionError(f"quantized_kv_start must be >= 0, got {self.quantized_kv_start}")
        if self.kv_bits is not None and self.max_kv_size is not None:
            raise OptionError("kv_bits and max_kv_size exclude each other (mlx-lm cannot quantize a rotating KV cache)")
