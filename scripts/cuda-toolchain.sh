#!/usr/bin/env bash
# Installs a pinned CUDA 13 compiler and runtime from PyPI wheels into a cache folder and
# prints the environment that uses it:
#
#     eval "$(scripts/cuda-toolchain.sh)"
#     nvcc -arch=sm_90 prog.cu -o prog
#
# Only the `export` lines go to stdout; every status message goes to stderr.
# A complete install is marked by a stamp file, so later runs return at once.
# See docs/cuda-toolchain.md.
set -euo pipefail

# The pinned set. nvcc, crt, nvvm and the runtime share one CUDA release; CCCL has its own
# version scheme (13.3.5.0.6 = CCCL 3.5.0 for CUDA 13), newest published for CUDA 13.
readonly CUDA_VERSION="13.5.37"
readonly PACKAGES=(
    "nvidia-cuda-nvcc==${CUDA_VERSION}"
    "nvidia-cuda-runtime==${CUDA_VERSION}"
    "nvidia-cuda-crt==${CUDA_VERSION}"
    "nvidia-nvvm==${CUDA_VERSION}"
    "nvidia-cuda-cccl==13.3.5.0.6"
)
# Bump when the fix-ups below change, so existing caches are rebuilt.
readonly LAYOUT_REVISION="1"

usage() {
    cat <<EOF
Usage: scripts/cuda-toolchain.sh [--force] [--help]

Installs the CUDA ${CUDA_VERSION} toolchain (nvcc, cudart, CCCL) from PyPI into
\${GPUFN_CACHE_DIR:-<repo>/.cache}/cuda-toolchain/${CUDA_VERSION} and prints
shell exports for it. Use it as:  eval "\$(scripts/cuda-toolchain.sh)"

  --force   reinstall even when the cache is complete
  --help    show this text

Environment: GPUFN_CACHE_DIR (cache root), PIP_INDEX_URL and other PIP_* settings are
passed to pip unchanged.
EOF
}

log() { printf 'cuda-toolchain: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Quotes a value for a POSIX shell: 'it'\''s'.
shell_quote() {
    local escaped=${1//\'/\'\\\'\'}
    printf "'%s'" "$escaped"
}

# PATH-like list $1 with $2 in front, unless it is already there.
prepend_path() {
    local list=$1 dir=$2
    case ":${list}:" in
    *":${dir}:"*) printf '%s' "$list" ;;
    *) printf '%s' "${dir}${list:+:${list}}" ;;
    esac
}

stamp_contents() {
    printf 'layout %s\n' "$LAYOUT_REVISION"
    printf '%s\n' "${PACKAGES[@]}"
}

is_complete() {
    local root=$1
    [[ -f "$root/stamp" ]] && [[ "$(cat "$root/stamp")" == "$(stamp_contents)" ]]
}

# Completes what the wheels leave out, in the CUDA_HOME at $1.
fix_layout() {
    local home=$1
    # pip keeps the wheels' executable bits today; make sure of it for every tool nvcc runs.
    chmod +x "$home"/bin/{nvcc,cudafe++,ptxas,fatbinary,nvlink,bin2c} "$home/nvvm/bin/cicc"
    # The runtime wheel ships only the versioned soname, but `nvcc -cudart shared` links with
    # -lcudart, which needs the unversioned development link.
    ln -sfn libcudart.so.13 "$home/lib/libcudart.so"
    # Build systems (CMake's FindCUDAToolkit, many Makefiles) look in lib64 like a system
    # toolkit has it; the wheels use lib.
    ln -sfn lib "$home/lib64"
}

# Builds a kernel program with static and with shared cudart, so a broken install is never
# stamped complete.
self_check() {
    local home=$1 work=$2
    local nvcc="$home/bin/nvcc"
    local version
    version=$("$nvcc" --version) || die "nvcc in $home does not run; see above"
    [[ "$version" == *"release ${CUDA_VERSION%.*},"* ]] ||
        die "nvcc in $home does not report release ${CUDA_VERSION%.*}: $version"
    cat >"$work/check.cu" <<'EOF'
#include <cuda/std/cstdint>
__global__ void scale(float *x, cuda::std::int32_t a) { x[threadIdx.x] *= a; }
int main() {
    float *x = nullptr;
    return cudaMalloc(&x, 4) == cudaSuccess ? 0 : 1;
}
EOF
    "$nvcc" -arch=sm_90 "$work/check.cu" -o "$work/check-static" >&2 ||
        die "the fresh toolchain could not build a test program (static cudart); see above"
    "$nvcc" -arch=sm_90 -cudart shared "$work/check.cu" -o "$work/check-shared" >&2 ||
        die "the fresh toolchain could not build a test program (-cudart shared); see above"
    rm -f "$work"/check*
}

install_toolchain() {
    local root=$1
    local staging="${root}.partial.$$"
    rm -rf "$staging"
    mkdir -p "$staging"
    # Never leave a half-built folder behind, whatever fails.
    trap 'rm -rf "$staging"' EXIT

    command -v python3 >/dev/null || die "python3 is needed to run pip; install Python 3 with pip"
    python3 -m pip --version >/dev/null 2>&1 ||
        die "pip is not available for python3; install it (e.g. apt-get install python3-pip)"

    log "installing CUDA ${CUDA_VERSION} from PyPI into $root (about 130 MB to download) ..."
    local pip_log="$staging/pip.log"
    if ! python3 -m pip install --no-deps --no-compile --only-binary=:all: \
        --disable-pip-version-check --no-warn-script-location \
        --target "$staging/site" "${PACKAGES[@]}" >"$pip_log" 2>&1; then
        tail -n 25 "$pip_log" >&2
        die "pip could not install ${PACKAGES[*]} (output above). Check that PyPI is" \
            "reachable (or set PIP_INDEX_URL to a mirror) and that this platform has" \
            "CUDA 13 wheels (Linux x86_64 or aarch64)."
    fi

    local home="$staging/site/nvidia/cu13"
    [[ -x "$home/bin/nvcc" ]] || die "the wheels did not contain nvidia/cu13/bin/nvcc; has the wheel layout changed?"
    fix_layout "$home"
    self_check "$home" "$staging"

    rm -f "$pip_log"
    stamp_contents >"$staging/stamp"
    rm -rf "$root"
    mv "$staging" "$root"
    trap - EXIT
    log "installed in $root"
}

print_env() {
    local home=$1
    printf 'export CUDA_HOME=%s\n' "$(shell_quote "$home")"
    printf 'export CUDA_PATH=%s\n' "$(shell_quote "$home")"
    printf 'export PATH=%s\n' "$(shell_quote "$(prepend_path "${PATH:-}" "$home/bin")")"
    # Lets programs built with `-cudart shared` find libcudart.so.13.
    printf 'export LD_LIBRARY_PATH=%s\n' \
        "$(shell_quote "$(prepend_path "${LD_LIBRARY_PATH:-}" "$home/lib")")"
}

main() {
    local force=0
    for arg in "$@"; do
        case "$arg" in
        --force) force=1 ;;
        --help | -h)
            usage
            return 0
            ;;
        *)
            usage >&2
            die "unknown argument: $arg"
            ;;
        esac
    done

    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local cache=${GPUFN_CACHE_DIR:-$repo/.cache}
    mkdir -p "$cache/cuda-toolchain" || die "cannot create the cache folder $cache/cuda-toolchain"
    cache=$(cd "$cache" && pwd)
    local root="$cache/cuda-toolchain/${CUDA_VERSION}"

    if [[ $force -eq 1 ]] || ! is_complete "$root"; then
        # Parallel test processes may all arrive here: one installs, the others wait for it.
        exec 9>"$cache/cuda-toolchain/.lock"
        flock 9
        if [[ $force -eq 1 ]] || ! is_complete "$root"; then
            install_toolchain "$root"
        fi
        flock -u 9
    fi
    print_env "$root/site/nvidia/cu13"
}

main "$@"
