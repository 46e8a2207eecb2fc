#!/usr/bin/env bash
# Build (once) and print the path of a llama-cpp-python wheel compiled with GGML_NATIVE=OFF.
#
# Why: llama-cpp-python ships no Linux wheel, so pip compiles it. A native build (-march=native)
# segfaults inside llama_decode on some CPUs (AVX-512/AMX machines among them), and pip's wheel
# cache does not key on CMAKE_ARGS, so a wheel built once with other flags would be reused
# silently. We therefore build our own wheel, with the flags in the folder name, and install
# from that file. It leaves out llama-cpp-python's multimodal library (mtmd, LLAVA_BUILD=OFF):
# phi-backends runs text models only, and llama.cpp's examples, tools and tests are already off
# when llama-cpp-python builds it as a subproject.
#
# Usage: scripts/llama-cpp-wheel.sh [PYTHON]   -> prints the .whl path on stdout
# Env:   LLAMA_CPP_VERSION (default 0.3.36), LLAMA_CPP_CMAKE_ARGS (default -DGGML_NATIVE=OFF;
#        -DLLAVA_BUILD=OFF is added unless it names LLAVA_BUILD itself),
#        PHI_BACKENDS_WHEELHOUSE (default ~/.cache/phi-backends/wheels)
set -euo pipefail
python=${1:-python3}
version=${LLAMA_CPP_VERSION:-0.3.36}
cmake_args=${LLAMA_CPP_CMAKE_ARGS:--DGGML_NATIVE=OFF}
case "$cmake_args" in *LLAVA_BUILD*) ;; *) cmake_args="$cmake_args -DLLAVA_BUILD=OFF" ;; esac
tag=$(printf '%s' "$cmake_args" | tr -c 'A-Za-z0-9=._-' '_')
pyver=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
dir=${PHI_BACKENDS_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/phi-backends/wheels}/llama-cpp-python-$version-$pyver-$tag
wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  mkdir -p "$dir"
  # pip is silent while the C++ compiles (4 minutes on the 2-core test machine, 17 on the one
  # issue 16 was found on): say so, and show that it is still going.
  echo "building llama-cpp-python $version with CMAKE_ARGS=$cmake_args, once:" \
    "4 to 20 minutes on 2 cores, by the CPU; less on more cores" >&2
  CMAKE_ARGS="$cmake_args" "$python" -m pip wheel --quiet --no-deps --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python==$version" -w "$dir" >&2 &
  pip_pid=$!
  started=$SECONDS
  while kill -0 "$pip_pid" 2>/dev/null; do
    for _ in $(seq 60); do kill -0 "$pip_pid" 2>/dev/null && sleep 1 || break; done
    if kill -0 "$pip_pid" 2>/dev/null; then
      echo "  still compiling llama.cpp: $(( (SECONDS - started) / 60 )) min so far" >&2
    fi
  done
  wait "$pip_pid"  # its exit status: set -e stops here if the build failed
  wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -n 1)
fi
printf '%s\n' "$wheel"
