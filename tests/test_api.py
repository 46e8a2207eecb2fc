"""The public surface: names, laziness, and the error family."""

from __future__ import annotations

import inspect
import subprocess
import sys

import phi_backends
from phi_backends import errors


def test_all_is_sorted_and_matches_public_names() -> None:
    public = {
        name
        for name, value in vars(phi_backends).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert phi_backends.__all__ == sorted(phi_backends.__all__)
    assert set(phi_backends.__all__) == public


def test_importing_the_core_imports_no_engine() -> None:
    code = "import sys, phi_backends; print(sorted(m for m in sys.modules if m.split('.')[0] in ('llama_cpp', 'mlx', 'mlx_lm', 'onnxruntime_genai', 'huggingface_hub')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_imports_no_engine_and_no_numpy_for_help() -> None:
    """``phi-backends --help`` of every command stays fast: no engine, no NumPy, no hub client."""
    code = (
        "import sys, contextlib, io\nfrom phi_backends.cli.main import main\n"
        "for cmd in ('run', 'parity', 'backends', 'config', 'models'):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([cmd, '--help'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'llama_cpp', 'mlx', 'mlx_lm', 'onnxruntime_genai', 'huggingface_hub', 'numpy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_error_is_one_line_with_an_exit_code() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls is errors.PhiBackendsWarning:  # a warning, not an error: it has no exit code
            assert issubclass(cls, UserWarning) and not issubclass(cls, errors.PhiBackendsError)
            continue
        err = cls("first line\n  second   line")
        assert str(err) == "first line second line"
        assert err.exit_code == (2 if issubclass(cls, errors.UsageError) else 1)
    assert errors.SamplingConfigError.__mro__[1] is errors.UsageError
    assert issubclass(errors.DownloadError, errors.RuntimeFailure)
