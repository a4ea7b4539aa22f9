#!/usr/bin/env bash
# Installs pinned Python GPU libraries (Numba CUDA, CuPy, NumPy, NVRTC) from PyPI into a
# virtual environment under the cache folder and prints its python's path:
#
#     eval "$(scripts/cuda-toolchain.sh)"   # NVVM and the CUDA headers Numba uses
#     python=$(scripts/python-gpu-env.sh)
#     gpufn run -- "$python" tests/python/numba_kernels.py   # or cupy_kernels.py
#
# Status messages go to stderr. A complete install is marked by a stamp file, so later
# runs return at once. tests/numba_programs.rs calls it.
set -euo pipefail

readonly PACKAGES=(
    "numba-cuda==0.30.4"
    "numba==0.68.1"
    "cupy-cuda13x==14.2.0"
    "numpy==2.4.6"
    "cuda-bindings==13.5.0"
    "nvidia-cuda-nvrtc==13.5.37"
)

log() { printf 'python-gpu-env: %s\n' "$*" >&2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${GPUFN_CACHE_DIR:-$root/.cache}/python-gpu-env"
stamp="$cache/stamp"
complete() { [[ -f "$stamp" && "$(cat "$stamp")" == "$(printf '%s\n' "${PACKAGES[@]}")" ]]; }
if complete; then
    printf '%s\n' "$cache/venv/bin/python"
    exit 0
fi
# Tests run in parallel: one installs while the others wait, then find it complete.
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9
if complete; then
    printf '%s\n' "$cache/venv/bin/python"
    exit 0
fi

log "installing ${PACKAGES[*]} into $cache (once; about 700 MB)"
rm -rf "$cache"
mkdir -p "$cache"
python3 -m venv "$cache/venv" >&2
"$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "${PACKAGES[@]}" >&2
# Numba finds cudart and NVVM through CUDA_HOME, which the toolchain's environment sets.
eval "$("$root/scripts/cuda-toolchain.sh")"
"$cache/venv/bin/python" -c "import numba.cuda, cupy, numpy" >&2 ||
    { log "error: the installed packages do not import"; exit 1; }
printf '%s\n' "${PACKAGES[@]}" >"$stamp"
printf '%s\n' "$cache/venv/bin/python"
