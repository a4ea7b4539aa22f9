// matmul: reads two matrices as JSON from stdin, multiplies them with a tiled CUDA kernel in
// double precision and writes the product as JSON to stdout.
//
// Input:  {"a": [[1, 2], [3, 4]], "b": [[5], [6]]}   (a is m x k, b is k x n; rows are arrays)
// Output: {"c": [[17], [39]]}                          (m x n; numbers printed with 17
//                                                       significant digits, so they read back exactly)
// Each c[i][j] is accumulated over k in increasing order with fused multiply-adds.
// Exit codes: 0 ok, 1 bad input (message on stderr), 2 CUDA error.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <cuda_runtime.h>

static const int EXIT_BAD_INPUT = 1;
static const int EXIT_CUDA_ERROR = 2;
// Most bytes read from stdin: the input is held in memory whole.
static const size_t MAX_INPUT_BYTES = size_t(1) << 30;
// Largest side of a matrix and the most elements one matrix may have.
static const size_t MAX_SIDE = 8192;
static const size_t MAX_ELEMENTS = size_t(16) << 20;
static const int TILE = 16;

#define CHECK(call)                                                                  \
    do {                                                                             \
        cudaError_t err_ = (call);                                                   \
        if (err_ != cudaSuccess) {                                                   \
            std::fprintf(stderr, "matmul: CUDA error %s (%s) in %s\n",               \
                         cudaGetErrorName(err_), cudaGetErrorString(err_), #call);   \
            std::exit(EXIT_CUDA_ERROR);                                              \
        }                                                                            \
    } while (0)

// c = a * b with a: m x k, b: k x n, all row-major; one thread per element of c, operands
// staged through shared memory one TILE x TILE tile at a time.
__global__ void matmul(const double *a, const double *b, double *c, int m, int k, int n) {
    __shared__ double a_tile[TILE][TILE];
    __shared__ double b_tile[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    double sum = 0.0;
    for (int base = 0; base < k; base += TILE) {
        int a_col = base + threadIdx.x, b_row = base + threadIdx.y;
        a_tile[threadIdx.y][threadIdx.x] = row < m && a_col < k ? a[size_t(row) * k + a_col] : 0.0;
        b_tile[threadIdx.y][threadIdx.x] = b_row < k && col < n ? b[size_t(b_row) * n + col] : 0.0;
        __syncthreads();
        int count = k - base < TILE ? k - base : TILE;
        for (int i = 0; i < count; i++) sum = fma(a_tile[threadIdx.y][i], b_tile[i][threadIdx.x], sum);
        __syncthreads();
    }
    if (row < m && col < n) c[size_t(row) * n + col] = sum;
}

[[noreturn]] static void bad_input(const std::string &message) {
    std::fprintf(stderr, "matmul: bad input: %s\n", message.c_str());
    std::fprintf(stderr, "matmul: expected JSON like {\"a\": [[1, 2], [3, 4]], \"b\": [[5], [6]]}\n");
    std::exit(EXIT_BAD_INPUT);
}

struct Matrix {
    size_t rows = 0, cols = 0;
    std::vector<double> values;  // row-major
};

// A minimal JSON reader for the one document shape this function accepts.
class Reader {
  public:
    explicit Reader(const std::string &text) : text_(text) {}

    void skip_space() {
        while (pos_ < text_.size() && std::strchr(" \t\r\n", text_[pos_]) != nullptr && text_[pos_] != '\0') pos_++;
    }
    bool at_end() {
        skip_space();
        return pos_ == text_.size();
    }
    bool peek(char c) {
        skip_space();
        return pos_ < text_.size() && text_[pos_] == c;
    }
    void expect(char c, const char *where) {
        if (!peek(c)) fail(std::string("expected '") + c + "' " + where);
        pos_++;
    }
    std::string string() {
        expect('"', "to start a key");
        std::string out;
        while (pos_ < text_.size() && text_[pos_] != '"') {
            if (text_[pos_] == '\\') fail("escapes in keys are not supported");
            out.push_back(text_[pos_++]);
        }
        if (pos_ == text_.size()) fail("unterminated string");
        pos_++;
        return out;
    }
    double number(const std::string &what) {
        skip_space();
        size_t start = pos_;
        // JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        if (pos_ < text_.size() && text_[pos_] == '-') pos_++;
        if (pos_ < text_.size() && text_[pos_] == '0') {
            pos_++;
        } else if (!digits()) {
            fail(what + " is not a number");
        }
        if (pos_ < text_.size() && text_[pos_] == '.') {
            pos_++;
            if (!digits()) fail(what + " has no digits after the decimal point");
        }
        if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
            pos_++;
            if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) pos_++;
            if (!digits()) fail(what + " has no digits in its exponent");
        }
        double value = std::strtod(text_.substr(start, pos_ - start).c_str(), nullptr);
        if (!std::isfinite(value)) fail(what + " is too large for a 64-bit float");
        return value;
    }
    Matrix matrix(const std::string &name) {
        Matrix m;
        expect('[', ("to start matrix \"" + name + "\" (an array of rows)").c_str());
        if (peek(']')) fail("matrix \"" + name + "\" has no rows");
        while (true) {
            std::string row_name = name + "[" + std::to_string(m.rows) + "]";
            expect('[', ("to start row " + row_name).c_str());
            size_t cols = 0;
            if (peek(']')) fail("row " + row_name + " is empty");
            while (true) {
                if (m.values.size() == MAX_ELEMENTS)
                    fail("matrix \"" + name + "\" has more than " + std::to_string(MAX_ELEMENTS) + " elements");
                m.values.push_back(number(row_name + "[" + std::to_string(cols) + "]"));
                cols++;
                if (peek(',')) { pos_++; continue; }
                expect(']', ("after an element of row " + row_name).c_str());
                break;
            }
            if (m.rows == 0) {
                m.cols = cols;
            } else if (cols != m.cols) {
                fail("row " + row_name + " has " + std::to_string(cols) + " elements but row " + name +
                     "[0] has " + std::to_string(m.cols) + "; all rows must have the same length");
            }
            m.rows++;
            if (m.rows > MAX_SIDE || m.cols > MAX_SIDE)
                fail("matrix \"" + name + "\" is larger than " + std::to_string(MAX_SIDE) + " in a dimension");
            if (peek(',')) { pos_++; continue; }
            expect(']', ("after a row of matrix \"" + name + "\"").c_str());
            return m;
        }
    }
    [[noreturn]] void fail(const std::string &message) {
        bad_input(message + " (at byte " + std::to_string(pos_) + ")");
    }

  private:
    bool digits() {
        size_t start = pos_;
        while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') pos_++;
        return pos_ > start;
    }
    const std::string &text_;
    size_t pos_ = 0;
};

static void parse_input(const std::string &text, Matrix &a, Matrix &b) {
    Reader reader(text);
    bool have_a = false, have_b = false;
    reader.expect('{', "at the start of the document");
    if (!reader.peek('}')) {
        while (true) {
            std::string key = reader.string();
            reader.expect(':', "after a key");
            if (key == "a" && !have_a) {
                a = reader.matrix("a");
                have_a = true;
            } else if (key == "b" && !have_b) {
                b = reader.matrix("b");
                have_b = true;
            } else if (key == "a" || key == "b") {
                reader.fail("key \"" + key + "\" appears twice");
            } else {
                reader.fail("unknown key \"" + key + "\"; only \"a\" and \"b\" are accepted");
            }
            if (reader.peek(',')) { reader.expect(',', ""); continue; }
            break;
        }
    }
    reader.expect('}', "at the end of the document");
    if (!reader.at_end()) reader.fail("unexpected data after the document");
    if (!have_a || !have_b) bad_input(std::string("missing matrix \"") + (have_a ? "b" : "a") + "\"");
    if (a.cols != b.rows)
        bad_input("cannot multiply a " + std::to_string(a.rows) + "x" + std::to_string(a.cols) + " matrix by a " +
                  std::to_string(b.rows) + "x" + std::to_string(b.cols) +
                  " matrix: the columns of \"a\" must equal the rows of \"b\"");
    if (a.rows * b.cols > MAX_ELEMENTS)
        bad_input("the product would have more than " + std::to_string(MAX_ELEMENTS) + " elements");
}

static std::string read_all(FILE *in) {
    std::string data;
    char buffer[1 << 16];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, in)) > 0) {
        if (data.size() + n > MAX_INPUT_BYTES) {
            std::fprintf(stderr, "matmul: bad input: more than %zu bytes on stdin\n", MAX_INPUT_BYTES);
            std::exit(EXIT_BAD_INPUT);
        }
        data.append(buffer, n);
    }
    if (std::ferror(in)) {
        std::fprintf(stderr, "matmul: cannot read stdin\n");
        std::exit(EXIT_BAD_INPUT);
    }
    return data;
}

int main() {
    std::string text = read_all(stdin);
    Matrix a, b;
    parse_input(text, a, b);
    int m = int(a.rows), k = int(a.cols), n = int(b.cols);

    double *da, *db, *dc;
    CHECK(cudaMalloc(&da, a.values.size() * sizeof(double)));
    CHECK(cudaMalloc(&db, b.values.size() * sizeof(double)));
    CHECK(cudaMalloc(&dc, size_t(m) * n * sizeof(double)));
    CHECK(cudaMemcpy(da, a.values.data(), a.values.size() * sizeof(double), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b.values.data(), b.values.size() * sizeof(double), cudaMemcpyHostToDevice));
    dim3 threads(TILE, TILE);
    dim3 blocks(unsigned((n + TILE - 1) / TILE), unsigned((m + TILE - 1) / TILE));
    matmul<<<blocks, threads>>>(da, db, dc, m, k, n);
    CHECK(cudaGetLastError());
    std::vector<double> c(size_t(m) * n);
    CHECK(cudaMemcpy(c.data(), dc, c.size() * sizeof(double), cudaMemcpyDeviceToHost));
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));

    for (double value : c) {
        if (!std::isfinite(value)) {
            std::fprintf(stderr, "matmul: the product overflows a 64-bit float; scale the inputs down\n");
            return EXIT_BAD_INPUT;
        }
    }
    std::string out = "{\"c\": [";
    char number[40];
    for (int i = 0; i < m; i++) {
        out += i == 0 ? "[" : ", [";
        for (int j = 0; j < n; j++) {
            std::snprintf(number, sizeof number, j == 0 ? "%.17g" : ", %.17g", c[size_t(i) * n + j]);
            out += number;
        }
        out += "]";
    }
    out += "]}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : EXIT_BAD_INPUT;
}
