// blur: reads a binary PPM image (P6) from stdin and writes it blurred, or its edges, as a
// binary PPM to stdout. The filter runs as a CUDA kernel, one thread per pixel.
//
// Mode: the first argument or the BLUR_MODE environment variable, `blur` (default) or `edge`.
//   blur: 3x3 Gaussian, weights 1 2 1 / 2 4 2 / 1 2 1, sum rounded: (s + 8) / 16 per channel.
//   edge: Sobel on the luma y = (77 R + 150 G + 29 B) >> 8; the magnitude |gx| + |gy|,
//         capped at the image's maxval, in all three channels.
// Pixels outside the image repeat the nearest edge pixel. Integer arithmetic throughout, so
// the output is exact and the same on every device.
// Exit codes: 0 ok, 1 bad input or usage (message on stderr), 2 CUDA error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <cuda_runtime.h>

static const int EXIT_BAD_INPUT = 1;
static const int EXIT_CUDA_ERROR = 2;
// Largest width or height accepted, and the most pixels (256 Mi bytes of RGB).
static const long MAX_SIDE = 32768;
static const long MAX_PIXELS = long(1) << 26;
// Most bytes read from stdin (the largest image plus its header): it is held in memory whole.
static const size_t MAX_INPUT_BYTES = size_t(MAX_PIXELS) * 3 + 4096;

#define CHECK(call)                                                                  \
    do {                                                                             \
        cudaError_t err_ = (call);                                                   \
        if (err_ != cudaSuccess) {                                                   \
            std::fprintf(stderr, "blur: CUDA error %s (%s) in %s\n",                 \
                         cudaGetErrorName(err_), cudaGetErrorString(err_), #call);   \
            std::exit(EXIT_CUDA_ERROR);                                              \
        }                                                                            \
    } while (0)

enum Mode { BLUR, EDGE };

__device__ int clamp_index(int i, int size) { return i < 0 ? 0 : (i >= size ? size - 1 : i); }

__device__ int luma(const uint8_t *rgb) {
    return (77 * rgb[0] + 150 * rgb[1] + 29 * rgb[2]) >> 8;
}

__global__ void filter(const uint8_t *in, uint8_t *out, int width, int height, int maxval, Mode mode) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    uint8_t *target = out + (size_t(y) * width + x) * 3;
    if (mode == BLUR) {
        const int weights[3][3] = {{1, 2, 1}, {2, 4, 2}, {1, 2, 1}};
        for (int c = 0; c < 3; c++) {
            int sum = 0;
            for (int dy = -1; dy <= 1; dy++) {
                for (int dx = -1; dx <= 1; dx++) {
                    int sx = clamp_index(x + dx, width), sy = clamp_index(y + dy, height);
                    sum += weights[dy + 1][dx + 1] * in[(size_t(sy) * width + sx) * 3 + c];
                }
            }
            target[c] = uint8_t((sum + 8) / 16);
        }
    } else {
        const int sobel_x[3][3] = {{-1, 0, 1}, {-2, 0, 2}, {-1, 0, 1}};
        const int sobel_y[3][3] = {{-1, -2, -1}, {0, 0, 0}, {1, 2, 1}};
        int gx = 0, gy = 0;
        for (int dy = -1; dy <= 1; dy++) {
            for (int dx = -1; dx <= 1; dx++) {
                int sx = clamp_index(x + dx, width), sy = clamp_index(y + dy, height);
                int l = luma(in + (size_t(sy) * width + sx) * 3);
                gx += sobel_x[dy + 1][dx + 1] * l;
                gy += sobel_y[dy + 1][dx + 1] * l;
            }
        }
        int magnitude = abs(gx) + abs(gy);
        uint8_t value = uint8_t(magnitude > maxval ? maxval : magnitude);
        target[0] = target[1] = target[2] = value;
    }
}

[[noreturn]] static void bad_input(const std::string &message) {
    std::fprintf(stderr, "blur: bad input: %s\n", message.c_str());
    std::fprintf(stderr, "blur: expected a binary PPM image (P6, maxval 1..255) on stdin\n");
    std::exit(EXIT_BAD_INPUT);
}

static std::string read_all(FILE *in) {
    std::string data;
    char buffer[1 << 16];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, in)) > 0) {
        if (data.size() + n > MAX_INPUT_BYTES) {
            std::fprintf(stderr, "blur: bad input: more than %zu bytes on stdin\n", MAX_INPUT_BYTES);
            std::exit(EXIT_BAD_INPUT);
        }
        data.append(buffer, n);
    }
    if (std::ferror(in)) {
        std::fprintf(stderr, "blur: cannot read stdin\n");
        std::exit(EXIT_BAD_INPUT);
    }
    return data;
}

struct Image {
    long width = 0, height = 0, maxval = 0;
    size_t pixels_offset = 0;
};

// Skips whitespace and `#` comments, then reads one decimal header field named `what`.
static long header_number(const std::string &data, size_t &pos, const char *what, long limit) {
    while (pos < data.size()) {
        char c = data[pos];
        if (c == '#') {
            while (pos < data.size() && data[pos] != '\n') pos++;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
            pos++;
        } else {
            break;
        }
    }
    long value = 0;
    size_t digits = 0;
    while (pos < data.size() && data[pos] >= '0' && data[pos] <= '9') {
        value = value * 10 + (data[pos] - '0');
        if (value > limit) bad_input(std::string("the ") + what + " is larger than " + std::to_string(limit));
        pos++;
        digits++;
    }
    if (digits == 0) bad_input(std::string("the header ends before its ") + what);
    return value;
}

static Image parse_header(const std::string &data) {
    if (data.size() < 2 || data[0] != 'P' || data[1] != '6') {
        if (data.size() >= 2 && data[0] == 'P' && data[1] == '3')
            bad_input("this is a plain-text PPM (P3); convert it to binary P6");
        if (data.size() >= 4 && std::memcmp(data.data(), "\x89PNG", 4) == 0)
            bad_input("this is a PNG; convert it to binary PPM (P6), e.g. with `convert in.png out.ppm`");
        bad_input("the data does not start with the PPM magic \"P6\"");
    }
    Image image;
    size_t pos = 2;
    image.width = header_number(data, pos, "width", MAX_SIDE);
    image.height = header_number(data, pos, "height", MAX_SIDE);
    image.maxval = header_number(data, pos, "maxval", 65535);
    if (image.width == 0 || image.height == 0) bad_input("the image has no pixels (width or height is 0)");
    if (image.width * image.height > MAX_PIXELS)
        bad_input("the image has more than " + std::to_string(MAX_PIXELS) + " pixels");
    if (image.maxval == 0 || image.maxval > 255)
        bad_input("maxval " + std::to_string(image.maxval) + " is not supported; use 8-bit samples (maxval 1..255)");
    if (pos >= data.size() || !(data[pos] == ' ' || data[pos] == '\t' || data[pos] == '\n' || data[pos] == '\r'))
        bad_input("the header must end with one whitespace character after maxval");
    image.pixels_offset = pos + 1;
    size_t expected = size_t(image.width) * size_t(image.height) * 3;
    size_t present = data.size() - image.pixels_offset;
    if (present != expected)
        bad_input("a " + std::to_string(image.width) + "x" + std::to_string(image.height) + " image needs " +
                  std::to_string(expected) + " bytes of pixels, found " + std::to_string(present));
    return image;
}

static Mode parse_mode(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : std::getenv("BLUR_MODE");
    if (argc > 2) {
        std::fprintf(stderr, "blur: usage: blur [blur|edge] < in.ppm > out.ppm\n");
        std::exit(EXIT_BAD_INPUT);
    }
    if (name == nullptr || std::strcmp(name, "blur") == 0) return BLUR;
    if (std::strcmp(name, "edge") == 0) return EDGE;
    std::fprintf(stderr, "blur: unknown mode \"%s\": use blur or edge (argument or BLUR_MODE)\n", name);
    std::exit(EXIT_BAD_INPUT);
}

int main(int argc, char **argv) {
    Mode mode = parse_mode(argc, argv);
    std::string data = read_all(stdin);
    Image image = parse_header(data);
    size_t bytes = size_t(image.width) * size_t(image.height) * 3;

    uint8_t *din, *dout;
    CHECK(cudaMalloc(&din, bytes));
    CHECK(cudaMalloc(&dout, bytes));
    CHECK(cudaMemcpy(din, data.data() + image.pixels_offset, bytes, cudaMemcpyHostToDevice));
    dim3 threads(16, 16);
    dim3 blocks(unsigned((image.width + 15) / 16), unsigned((image.height + 15) / 16));
    filter<<<blocks, threads>>>(din, dout, int(image.width), int(image.height), int(image.maxval), mode);
    CHECK(cudaGetLastError());
    std::vector<uint8_t> result(bytes);
    CHECK(cudaMemcpy(result.data(), dout, bytes, cudaMemcpyDeviceToHost));
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));

    std::printf("P6\n%ld %ld\n%ld\n", image.width, image.height, image.maxval);
    std::fwrite(result.data(), 1, bytes, stdout);
    return std::fflush(stdout) == 0 ? 0 : EXIT_BAD_INPUT;
}
