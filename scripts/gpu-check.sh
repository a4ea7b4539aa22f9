#!/usr/bin/env bash
# Verifies the worker's cuda backend on a machine with an NVIDIA GPU (issue 5), against the
# cpu backend and against the program running natively. Two steps, because the GPU machine
# need not have Rust:
#
#   scripts/gpu-check.sh bundle DIR      on a development machine (Rust, gcc, and the CUDA
#                                        toolchain from scripts/cuda-toolchain.sh): builds
#                                        gpufn and the stub (release), compiles the test
#                                        programs and packs DIR
#   DIR/gpu-check.sh run [OUT]           on the GPU machine (NVIDIA driver; python3 with torch
#                                        for part 2): runs the checks, writes OUT (default
#                                        DIR/results) with OUT/summary.md
#
# `run` does, each result next to its baseline measured in the same run:
#   1. the test program suite natively, through the stub on the cpu backend, and through the
#      stub on the cuda backend; the cuda run's exit code and stdout must equal the cpu
#      run's (and the native run's);
#   2. scripts/gpu/torch_check.py natively and through the stub (tensor creation, copies,
#      matmul, convolution, one MLP training step), with every driver call the stub refused;
#   3. measurements: sync call round trip over a Unix socket and launches/s (launch_rate),
#      host<->device copy bandwidth (copy_bandwidth), swap-out/swap-in throughput of a
#      1 GiB session vs pinned copy bandwidth, and the wall time of a small program.
# See docs/ARCHITECTURE.md ("Checking the cuda backend on a GPU").
#
# Environment: GPU_CHECK_BACKEND (default cuda) is the backend under test; `cpu` runs the
# same script on a machine without a GPU (to check the script itself; native runs are then
# skipped). GPU_CHECK_SWAP_MIB (default 1024) sizes the swap measurement.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
# Programs get SASS for the common data-centre GPUs and compute_90 PTX (which the cpu
# backend runs, and which newer GPUs JIT-compile).
# shellcheck disable=SC2054 # the commas belong to nvcc's -gencode syntax
readonly GENCODE=(
    -gencode arch=compute_80,code=sm_80
    -gencode "arch=compute_90,code=[sm_90,compute_90]"
    -gencode arch=compute_100,code=sm_100
    -gencode arch=compute_120,code=sm_120
)

die() {
    echo "gpu-check: $*" >&2
    exit 1
}

usage() {
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

# ---------------------------------------------------------------------------------------
# bundle: on the development machine
# ---------------------------------------------------------------------------------------

bundle() {
    local dir="${1:-}"
    [[ -n "$dir" ]] || die "usage: scripts/gpu-check.sh bundle DIR"
    local repo
    repo="$(cd "$HERE/.." && pwd)"
    [[ -f "$repo/Cargo.toml" ]] || die "run 'bundle' from the repository's scripts/ folder"
    mkdir -p "$dir/bin" "$dir/programs" "$dir/gpu" || die "cannot create $dir"
    dir="$(cd "$dir" && pwd)"

    echo "gpu-check: building gpufn and the stub (release)" >&2
    (cd "$repo" && cargo build --release --quiet -p gpufn -p gpufn-stub) ||
        die "cargo build failed"
    local target="${CARGO_TARGET_DIR:-$repo/target}/release"
    cp "$target/gpufn" "$target/libgpufn_stub.so" "$dir/bin/" || die "copying binaries failed"

    echo "gpu-check: installing the CUDA toolchain (cached)" >&2
    eval "$("$repo/scripts/cuda-toolchain.sh")" || die "scripts/cuda-toolchain.sh failed"
    local src="$repo/tests/programs"
    local out="$dir/programs"
    local nvcc_flags=("${GENCODE[@]}" -O2)
    compile() { # NAME SOURCE [FLAGS...]
        local name="$1" source="$2"
        shift 2
        echo "gpu-check: nvcc $name" >&2
        nvcc "${nvcc_flags[@]}" "$@" "$source" -o "$out/$name" || die "nvcc failed for $name"
    }
    compile vector_add "$src/vector_add.cu"
    compile corpus "$src/corpus.cu"
    compile corpus_shared "$src/corpus.cu" -cudart shared
    compile corpus_ptds "$src/corpus.cu" --default-stream per-thread
    compile mempool "$src/mempool.cu"
    compile errors "$src/errors.cu"
    compile printf "$src/printf.cu"
    compile swap_idle "$src/swap_idle.cu"
    compile launch_rate "$src/launch_rate.cu"
    compile copy_bandwidth "$repo/scripts/gpu/copy_bandwidth.cu"
    nvcc -ptx -arch=compute_80 "$src/kernels.cu" -o "$out/kernels.ptx" || die "nvcc -ptx failed"
    # The C driver-API program links against libcuda.so; the stub stands in at link time
    # (the soname is libcuda.so.1 either way, so natively it runs on the real driver).
    local link
    link="$(mktemp -d)"
    ln -sf "$dir/bin/libgpufn_stub.so" "$link/libcuda.so"
    gcc "$src/driver_api.c" -I"$CUDA_HOME/include" -L"$link" -lcuda -o "$out/driver_api" ||
        die "gcc failed for driver_api"
    rm -rf "$link"
    if [[ -d "$CUDA_HOME/lib" ]]; then
        # Programs built with -cudart shared need libcudart.so.13 next to them.
        cp -P "$CUDA_HOME"/lib/libcudart.so* "$out/" 2>/dev/null || true
    fi
    cp "$repo/scripts/gpu/torch_check.py" "$dir/gpu/"
    cp "${BASH_SOURCE[0]}" "$dir/gpu-check.sh"
    chmod +x "$dir/gpu-check.sh"
    echo "gpu-check: bundle ready in $dir; copy it to the GPU machine and run $dir/gpu-check.sh run" >&2
}

# ---------------------------------------------------------------------------------------
# run: on the GPU machine
# ---------------------------------------------------------------------------------------

BACKEND="${GPU_CHECK_BACKEND:-cuda}"
GPUFN=""
OUT=""
PROGRAMS=""
WORKER_PID=""
SOCKET=""

# The suite: name | program | arguments | text its stdout must contain.
SUITE=(
    "vector_add|vector_add||vector_add ok"
    "corpus (static cudart)|corpus||corpus ok"
    "corpus (shared cudart)|corpus_shared||corpus ok"
    "corpus (per-thread stream)|corpus_ptds||corpus ok"
    "mempool|mempool||mempool ok"
    "errors oob|errors|oob|"
    "errors quota|errors|quota|"
    "printf|printf||"
    "driver_api (PTX text)|driver_api|@PROGRAMS@/kernels.ptx|driver_api ok"
)

stop_worker() {
    if [[ -n "$WORKER_PID" ]]; then
        kill "$WORKER_PID" 2>/dev/null
        wait "$WORKER_PID" 2>/dev/null
        WORKER_PID=""
    fi
}

# Starts `gpufn worker` on a Unix socket with extra flags; its log goes to OUT/$1.log.
start_worker() { # LOGNAME [FLAGS...]
    local log="$OUT/$1.log"
    shift
    stop_worker
    SOCKET="$OUT/worker.sock"
    rm -f "$SOCKET"
    NO_COLOR=1 GPUFN_LOG=info "$GPUFN" worker --backend "$BACKEND" --listen "unix://$SOCKET" \
        --data-dir "$OUT/worker-data" "$@" >"$log" 2>&1 &
    WORKER_PID=$!
    for _ in $(seq 1 200); do
        [[ -S "$SOCKET" ]] && return 0
        kill -0 "$WORKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$log" >&2
    die "the worker did not start (log above)"
}

# Runs a suite case one way; writes OUT/suite/<way>/<n>.{out,err,rc}.
run_case() { # WAY INDEX PROGRAM ARGS...
    local way="$1" index="$2" program="$3"
    shift 3
    local base="$OUT/suite/$way/$index"
    mkdir -p "$OUT/suite/$way"
    case "$way" in
        native) timeout 300 "$PROGRAMS/$program" "$@" >"$base.out" 2>"$base.err" ;;
        *) timeout 300 "$GPUFN" run --backend "$way" -- "$PROGRAMS/$program" "$@" \
            >"$base.out" 2>"$base.err" ;;
    esac
    echo $? >"$base.rc"
}

suite() {
    local summary="$OUT/summary.md"
    {
        echo "## 1. Test programs: $BACKEND backend vs cpu backend vs native"
        echo
        echo "| program | native | cpu | $BACKEND | $BACKEND = cpu | $BACKEND = native |"
        echo "|---|---|---|---|---|---|"
    } >>"$summary"
    local failures=0 index=0 entry name program args expect
    for entry in "${SUITE[@]}"; do
        index=$((index + 1))
        IFS='|' read -r name program args expect <<<"$entry"
        args="${args//@PROGRAMS@/$PROGRAMS}"
        # shellcheck disable=SC2086 # arguments are single words
        {
            [[ "$BACKEND" == cpu ]] || run_case native "$index" "$program" $args
            run_case cpu "$index" "$program" $args
            [[ "$BACKEND" == cpu ]] || run_case "$BACKEND" "$index" "$program" $args
        }
        local native="-" cpu under same_cpu same_native="-"
        cpu="$(verdict cpu "$index" "$expect")"
        under="$(verdict "$BACKEND" "$index" "$expect")"
        same_cpu="$(same cpu "$BACKEND" "$index")"
        if [[ "$BACKEND" != cpu ]]; then
            native="$(verdict native "$index" "$expect")"
            same_native="$(same native "$BACKEND" "$index")"
        fi
        [[ "$same_cpu" == yes && "$under" == ok* ]] || failures=$((failures + 1))
        echo "| $name | $native | $cpu | $under | $same_cpu | $same_native |" >>"$summary"
    done
    echo >>"$summary"
    {
        echo "Outputs: suite/<way>/<n>.{out,err,rc} (n = row number)."
        echo
    } >>"$summary"
    echo "gpu-check: suite done, $failures case(s) differ or fail" >&2
    return "$failures"
}

verdict() { # WAY INDEX EXPECT
    local base="$OUT/suite/$1/$2"
    [[ -f "$base.rc" ]] || { echo "-"; return; }
    local rc
    rc="$(cat "$base.rc")"
    if [[ -n "$3" ]] && ! grep -qF "$3" "$base.out"; then
        echo "FAIL (rc $rc)"
    else
        echo "ok (rc $rc)"
    fi
}

# A program's stdout without timings such as "(12.3 ms)", so two runs compare.
untimed() {
    sed -E 's/ \([0-9.]+ ms\)$//' "$1"
}

same() { # WAY_A WAY_B INDEX: exit code and stdout (timings aside) equal
    local a="$OUT/suite/$1/$3" b="$OUT/suite/$2/$3"
    if cmp -s "$a.rc" "$b.rc" && cmp -s <(untimed "$a.out") <(untimed "$b.out"); then
        echo yes
    else
        echo "**no**"
    fi
}

torch_part() {
    local summary="$OUT/summary.md"
    echo "## 2. PyTorch through the stub ($BACKEND backend)" >>"$summary"
    echo >>"$summary"
    if ! python3 -c "import torch" 2>/dev/null; then
        echo "torch is not installed (python3 -c 'import torch' fails): skipped." >>"$summary"
        echo >>"$summary"
        return 1
    fi
    local script="$HERE/gpu/torch_check.py"
    [[ -f "$script" ]] || script="$HERE/scripts/gpu/torch_check.py"
    if [[ "$BACKEND" != cpu ]]; then
        timeout 600 python3 "$script" >"$OUT/torch-native.out" 2>"$OUT/torch-native.err"
    fi
    GPUFN_LOG=debug timeout 600 "$GPUFN" run --backend "$BACKEND" -- python3 "$script" \
        >"$OUT/torch-stub.out" 2>"$OUT/torch-stub.err"
    local rc=$?
    {
        echo '```text'
        echo "# native"
        cat "$OUT/torch-native.out" 2>/dev/null || echo "(not run)"
        echo "# through the stub (exit code $rc)"
        cat "$OUT/torch-stub.out"
        echo '```'
        echo
        echo "Driver calls the stub refused (CUDA_ERROR_NOT_SUPPORTED), with counts:"
        echo
        echo '```text'
        grep -o 'gpufn: [A-Za-z0-9_]* -> CUDA_ERROR_NOT_SUPPORTED' "$OUT/torch-stub.err" |
            awk '{print $2}' | sort | uniq -c | sort -rn || true
        echo '```'
        echo
        echo "Every call that failed (name -> code), with counts:"
        echo
        echo '```text'
        grep -o 'gpufn: [A-Za-z0-9_]* -> CUDA_ERROR_[A-Z_]*' "$OUT/torch-stub.err" |
            grep -v 'NOT_SUPPORTED' | awk '{print $2, $4}' | sort | uniq -c | sort -rn || true
        echo '```'
        echo
    } >>"$summary"
    return "$rc"
}

# Median of the numbers on stdin ("-" for none).
median() {
    grep -E '^[0-9.]+$' | sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}

# Wall time of one command in milliseconds ("failed" if it failed).
wall_ms() {
    local start end
    start="$(date +%s%N)"
    "$@" >/dev/null 2>&1 || { echo failed; return; }
    end="$(date +%s%N)"
    echo $(((end - start) / 1000000))
}

measurements() {
    local summary="$OUT/summary.md"
    echo "## 3. Measurements ($BACKEND backend, worker on a Unix socket)" >>"$summary"
    echo >>"$summary"
    start_worker bench-worker --session-memory 8GiB --device-memory 16GiB
    local via=("$GPUFN" run --worker "unix://$SOCKET" --)

    # Sync call round trip and launch rate.
    local native_lr stub_lr
    if [[ "$BACKEND" != cpu ]]; then
        native_lr="$("$PROGRAMS/launch_rate" 200000 5000 2>&1)"
    fi
    stub_lr="$("${via[@]}" "$PROGRAMS/launch_rate" 20000 2000 2>&1)"
    {
        echo "### Launches and synchronous calls (launch_rate)"
        echo
        echo "| run | result |"
        echo "|---|---|"
        echo "| native | ${native_lr:-not run} |"
        echo "| through the stub | ${stub_lr} |"
        echo
    } >>"$summary"

    # Copy bandwidth.
    local native_bw="" stub_bw
    if [[ "$BACKEND" != cpu ]]; then
        native_bw="$("$PROGRAMS/copy_bandwidth" 10 2>&1)"
    fi
    stub_bw="$("${via[@]}" "$PROGRAMS/copy_bandwidth" 3 2>&1)"
    {
        echo "### Host<->device copies (cudaMemcpy, MiB/s)"
        echo
        echo "| kind | host memory | bytes | native | through the stub | stub/native |"
        echo "|---|---|---|---|---|---|"
        local line key n s
        while read -r line; do
            [[ "$line" == copy* ]] || continue
            key="${line% MiBps=*}"
            s="${line##*MiBps=}"
            n="$(echo "$native_bw" | grep -F "$key MiBps=" | sed 's/.*MiBps=//')"
            echo "$key" | awk -v n="${n:-}" -v s="$s" '{
                split($2, k, "="); split($3, m, "="); split($4, b, "=");
                ratio = (n == "" || n == 0) ? "-" : sprintf("%.2f", s / n);
                printf "| %s | %s | %s | %s | %s | %s |\n", k[2], m[2], b[2], (n == "" ? "-" : n), s, ratio }'
        done <<<"$stub_bw"
        echo
    } >>"$summary"

    # Wall time of a small program.
    local native_ms=() stub_ms=() private_ms=()
    for _ in 1 2 3 4 5; do
        [[ "$BACKEND" == cpu ]] || native_ms+=("$(wall_ms "$PROGRAMS/vector_add")")
        stub_ms+=("$(wall_ms "${via[@]}" "$PROGRAMS/vector_add")")
        private_ms+=("$(wall_ms "$GPUFN" run --backend "$BACKEND" -- "$PROGRAMS/vector_add")")
    done
    {
        echo "### Wall time of vector_add (median of 5 successful runs, ms)"
        echo
        echo "| native | stub, running worker | stub, private worker started by gpufn run |"
        echo "|---|---|---|"
        echo "| $(printf '%s\n' "${native_ms[@]}" | median) | $(printf '%s\n' "${stub_ms[@]}" | median) | $(printf '%s\n' "${private_ms[@]}" | median) |"
        echo
    } >>"$summary"
    stop_worker

    # Swap-out and swap-in of one session, next to pinned copy bandwidth.
    local mib="${GPU_CHECK_SWAP_MIB:-1024}"
    start_worker swap-worker --session-memory 8GiB --idle-timeout 1s --host-swap-budget 16GiB
    timeout 600 "${via[@]}" "$PROGRAMS/swap_idle" "$mib" 4000 >"$OUT/swap_idle.out" 2>&1
    local swap_rc=$?
    stop_worker
    {
        echo "### Swap of a ${mib} MiB session (swap_idle, exit code $swap_rc: $(tail -n 1 "$OUT/swap_idle.out"))"
        echo
        echo "| event | bytes | ms | MiB/s |"
        echo "|---|---|---|---|"
        sed 's/\x1b\[[0-9;]*m//g' "$OUT/swap-worker.log" | grep ' swap ' | grep -o 'kind=[A-Za-z]* .*bytes=[0-9]* duration_ms=[0-9.]*' |
            awk '{split($1, k, "="); b = $0; sub(/.*bytes=/, "", b); sub(/ .*/, "", b);
                  d = $0; sub(/.*duration_ms=/, "", d);
                  printf "| %s | %s | %.1f | %.0f |\n", k[2], b, d, (d > 0 ? b / 1048576 / (d / 1000) : 0) }'
        echo
        echo "Pinned copy bandwidth for comparison (native, 256 MiB):"
        echo "$native_bw" | grep 'memory=pinned bytes=268435456' || echo "(not measured)"
        echo
        echo "Goals (issue 5): swap-in >= 80% of pinned host-to-device bandwidth; stub copy"
        echo "bandwidth >= 70% of native; small program through the stub <= 1.2x native."
        echo
    } >>"$summary"
}

run() {
    OUT="${1:-$HERE/results}"
    mkdir -p "$OUT" || die "cannot create $OUT"
    OUT="$(cd "$OUT" && pwd)"
    GPUFN="$HERE/bin/gpufn"
    PROGRAMS="$HERE/programs"
    [[ -x "$GPUFN" ]] || die "no $GPUFN: run this from a bundle made by 'scripts/gpu-check.sh bundle DIR'"
    export LD_LIBRARY_PATH="$PROGRAMS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    trap stop_worker EXIT
    local summary="$OUT/summary.md"
    {
        echo "# gpufn GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "Backend under test: $BACKEND. Host: $(uname -n), $(nproc) CPUs."
        echo
        echo '```text'
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv
        else
            echo "no nvidia-smi"
        fi
        echo '```'
        echo
    } >"$summary"
    if [[ "$BACKEND" != cpu ]] && ! command -v nvidia-smi >/dev/null; then
        die "no nvidia-smi: this is not a GPU machine (GPU_CHECK_BACKEND=cpu checks the script itself)"
    fi
    local status=0
    suite || status=1
    torch_part || status=1
    measurements || status=1
    echo "gpu-check: results in $OUT/summary.md" >&2
    return "$status"
}

case "${1:-}" in
    bundle) bundle "${2:-}" ;;
    run) run "${2:-}" ;;
    -h | --help | help) usage 0 ;;
    *) usage 1 ;;
esac
