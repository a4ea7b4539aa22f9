// vadd: reads two vectors of 32-bit floats from stdin and writes their element-wise sum,
// computed by a CUDA kernel, to stdout.
//
// Input: two lines of decimal numbers separated by spaces or tabs, the same count on each.
// Output: one line with the sums, each printed with 9 significant digits (enough to read
// back the exact float). Exit codes: 0 ok, 1 bad input (message on stderr), 2 CUDA error.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include <cuda_runtime.h>

static const int EXIT_BAD_INPUT = 1;
static const int EXIT_CUDA_ERROR = 2;
// Most bytes read from stdin: the input is held in memory whole.
static const size_t MAX_INPUT_BYTES = size_t(2) << 30;
// 64 Mi elements per vector: 768 MiB of device memory for the three vectors.
static const size_t MAX_ELEMENTS = size_t(64) << 20;

#define CHECK(call)                                                                  \
    do {                                                                             \
        cudaError_t err_ = (call);                                                   \
        if (err_ != cudaSuccess) {                                                   \
            std::fprintf(stderr, "vadd: CUDA error %s (%s) in %s\n",                 \
                         cudaGetErrorName(err_), cudaGetErrorString(err_), #call);   \
            std::exit(EXIT_CUDA_ERROR);                                              \
        }                                                                            \
    } while (0)

__global__ void vector_add(const float *a, const float *b, float *sum, size_t n) {
    size_t stride = size_t(gridDim.x) * blockDim.x;
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        sum[i] = a[i] + b[i];
    }
}

[[noreturn]] static void bad_input(const char *message, long detail = -1) {
    if (detail >= 0) {
        std::fprintf(stderr, "vadd: bad input: %s %ld\n", message, detail);
    } else {
        std::fprintf(stderr, "vadd: bad input: %s\n", message);
    }
    std::fprintf(stderr,
                 "vadd: expected two lines of numbers separated by spaces, the same count on "
                 "each, e.g. \"1 2 3\\n4 5 6\\n\"\n");
    std::exit(EXIT_BAD_INPUT);
}

static std::string read_all(FILE *in) {
    std::string data;
    char buffer[1 << 16];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, in)) > 0) {
        if (data.size() + n > MAX_INPUT_BYTES) {
            std::fprintf(stderr, "vadd: bad input: more than %zu bytes on stdin\n", MAX_INPUT_BYTES);
            std::exit(EXIT_BAD_INPUT);
        }
        data.append(buffer, n);
    }
    if (std::ferror(in)) {
        std::fprintf(stderr, "vadd: cannot read stdin\n");
        std::exit(EXIT_BAD_INPUT);
    }
    return data;
}

// Parses one line of numbers; `line_number` (1 or 2) names it in error messages.
static std::vector<float> parse_line(const std::string &line, int line_number) {
    std::vector<float> values;
    const char *p = line.c_str();
    const char *end = p + line.size();
    while (true) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
        if (p == end) break;
        if (values.size() == MAX_ELEMENTS) bad_input("too many numbers on a line; the limit is", long(MAX_ELEMENTS));
        char *after = nullptr;
        errno = 0;
        float value = std::strtof(p, &after);
        bool separated = after != p && (after == end || *after == ' ' || *after == '\t' || *after == '\r');
        if (!separated) {
            std::fprintf(stderr, "vadd: bad input: line %d, number %zu is not a number: \"%.*s\"\n",
                         line_number, values.size() + 1, int(std::min<ptrdiff_t>(end - p, 40)), p);
            std::exit(EXIT_BAD_INPUT);
        }
        if (!std::isfinite(value)) {
            std::fprintf(stderr, "vadd: bad input: line %d, number %zu is not a finite 32-bit float: \"%.*s\"\n",
                         line_number, values.size() + 1, int(after - p), p);
            std::exit(EXIT_BAD_INPUT);
        }
        values.push_back(value);
        p = after;
    }
    return values;
}

int main() {
    std::string input = read_all(stdin);
    // Split into lines, ignoring empty lines at the end.
    std::vector<std::string> lines;
    size_t start = 0;
    while (start <= input.size()) {
        size_t newline = input.find('\n', start);
        if (newline == std::string::npos) newline = input.size();
        lines.push_back(input.substr(start, newline - start));
        start = newline + 1;
    }
    while (!lines.empty() && lines.back().find_first_not_of(" \t\r") == std::string::npos) lines.pop_back();
    if (lines.size() != 2) bad_input("expected 2 lines, found", long(lines.size()));

    std::vector<float> a = parse_line(lines[0], 1);
    std::vector<float> b = parse_line(lines[1], 2);
    if (a.empty()) bad_input("the vectors are empty");
    if (a.size() != b.size()) {
        std::fprintf(stderr, "vadd: bad input: the vectors differ in length: %zu and %zu numbers\n",
                     a.size(), b.size());
        std::exit(EXIT_BAD_INPUT);
    }

    size_t n = a.size();
    size_t bytes = n * sizeof(float);
    float *da, *db, *dsum;
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMalloc(&db, bytes));
    CHECK(cudaMalloc(&dsum, bytes));
    CHECK(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b.data(), bytes, cudaMemcpyHostToDevice));
    int threads = 256;
    size_t blocks = std::min<size_t>((n + threads - 1) / threads, 4096);
    vector_add<<<unsigned(blocks), threads>>>(da, db, dsum, n);
    CHECK(cudaGetLastError());
    std::vector<float> sum(n);
    CHECK(cudaMemcpy(sum.data(), dsum, bytes, cudaMemcpyDeviceToHost));
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dsum));

    std::string out;
    out.reserve(n * 16);
    char number[32];
    for (size_t i = 0; i < n; i++) {
        int len = std::snprintf(number, sizeof number, i == 0 ? "%.9g" : " %.9g", double(sum[i]));
        out.append(number, size_t(len));
    }
    out.push_back('\n');
    std::fwrite(out.data(), 1, out.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : EXIT_BAD_INPUT;
}
