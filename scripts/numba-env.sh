#!/usr/bin/env bash
# Installs a pinned Numba CUDA (numba-cuda, NumPy, NVRTC) from PyPI into a virtual
# environment under the cache folder and prints its python's path:
#
#     eval "$(scripts/cuda-toolchain.sh)"   # NVVM and the CUDA headers Numba uses
#     python=$(scripts/numba-env.sh)
#     gpufn run -- "$python" tests/python/numba_kernels.py
#
# Status messages go to stderr. A complete install is marked by a stamp file, so later
# runs return at once. tests/numba_programs.rs calls it.
set -euo pipefail

readonly PACKAGES=(
    "numba-cuda==0.30.4"
    "numba==0.68.1"
    "numpy==2.4.6"
    "cuda-bindings==13.5.0"
    "nvidia-cuda-nvrtc==13.5.37"
)

log() { printf 'numba-env: %s\n' "$*" >&2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${GPUFN_CACHE_DIR:-$root/.cache}/numba-env"
stamp="$cache/stamp"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$(printf '%s\n' "${PACKAGES[@]}")" ]]; then
    printf '%s\n' "$cache/venv/bin/python"
    exit 0
fi

log "installing ${PACKAGES[*]} into $cache (once; about 500 MB)"
rm -rf "$cache"
mkdir -p "$cache"
python3 -m venv "$cache/venv" >&2
"$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "${PACKAGES[@]}" >&2
# Numba finds cudart and NVVM through CUDA_HOME, which the toolchain's environment sets.
eval "$("$root/scripts/cuda-toolchain.sh")"
"$cache/venv/bin/python" -c "import numba.cuda, numpy" >&2 ||
    { log "error: the installed packages do not import"; exit 1; }
printf '%s\n' "${PACKAGES[@]}" >"$stamp"
printf '%s\n' "$cache/venv/bin/python"
