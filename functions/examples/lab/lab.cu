// lab: a long-lived HTTP/1.1 server that loads a "model" into device memory once and answers
// requests with kernels over it — the shape of a ComfyUI / Stable Diffusion server.
//
// Environment:
//   PORT           port to listen on at 127.0.0.1 (required; 0 picks a free port)
//   LAB_MODEL_MIB  model size in MiB, 1..4096 (default 64)
// Endpoints:
//   GET  /healthz   -> 200 {"status": "ok", "model_bytes": N, "rows": R, "cols": 1024}
//   POST /generate  -> 200 {"seed": "<16 hex digits>", "row_ids": [...], "tokens": [...]}
//                      the body (any bytes, at most 64 KiB) is the prompt
// The model is a rows x 1024 matrix of 32-bit words, weight(i) = mix32(i), written by a kernel
// at start. A prompt's seed is its FNV-1a 64-bit hash; token t is the dot product, modulo
// 2^32, of model row row_ids[t] = mix32(lo ^ mix32(hi + t)) % rows with the vector
// x[c] = mix32(hi ^ (t * 1024 + c)), where lo and hi are the seed's low and high 32 bits.
// All arithmetic is on unsigned integers, so answers are exact and reproducible.
//
// Prints "lab: listening on http://127.0.0.1:PORT ..." once the model is loaded. SIGTERM or
// SIGINT frees the model and exits 0. Exit codes: 1 bad configuration, 2 CUDA error (also
// after answering the failing request with 500, since the device state is then unknown).
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cuda_runtime.h>

static const int EXIT_BAD_CONFIG = 1;
static const int EXIT_CUDA_ERROR = 2;
static const unsigned COLS = 1024;
static const int TOKENS = 16;
static const int THREADS = 256;
static const size_t MAX_HEADER = 16 << 10;
static const size_t MAX_BODY = 64 << 10;

static volatile sig_atomic_t stopping = 0;
static void on_stop_signal(int) { stopping = 1; }

__host__ __device__ uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

__global__ void generate_model(uint32_t *weights, size_t count) {
    size_t stride = size_t(gridDim.x) * blockDim.x;
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
        weights[i] = mix32(uint32_t(i));
    }
}

// One block per token: its threads share out the row's columns, then sum in shared memory.
__global__ void project(const uint32_t *weights, uint32_t rows, uint32_t lo, uint32_t hi,
                        uint32_t *row_ids, uint32_t *tokens) {
    __shared__ uint32_t partial[THREADS];
    uint32_t t = blockIdx.x;
    uint32_t row = mix32(lo ^ mix32(hi + t)) % rows;
    const uint32_t *w = weights + size_t(row) * COLS;
    uint32_t sum = 0;
    for (uint32_t c = threadIdx.x; c < COLS; c += blockDim.x) sum += w[c] * mix32(hi ^ (t * COLS + c));
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        row_ids[t] = row;
        tokens[t] = partial[0];
    }
}

static bool cuda_ok(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return true;
    std::fprintf(stderr, "lab: CUDA error %s (%s) in %s\n", cudaGetErrorName(err), cudaGetErrorString(err), what);
    return false;
}
#define TRY(call) cuda_ok((call), #call)

struct Model {
    uint32_t *weights = nullptr;
    uint32_t rows = 0;
    uint32_t *row_ids = nullptr;  // TOKENS words of device memory for each answer
    uint32_t *tokens = nullptr;
    size_t bytes() const { return size_t(rows) * COLS * sizeof(uint32_t); }
};

static bool load_model(Model &model, unsigned mib) {
    model.rows = uint32_t((size_t(mib) << 20) / (COLS * sizeof(uint32_t)));
    size_t count = size_t(model.rows) * COLS;
    if (!TRY(cudaMalloc(&model.weights, model.bytes()))) return false;
    if (!TRY(cudaMalloc(&model.row_ids, TOKENS * sizeof(uint32_t)))) return false;
    if (!TRY(cudaMalloc(&model.tokens, TOKENS * sizeof(uint32_t)))) return false;
    generate_model<<<1024, THREADS>>>(model.weights, count);
    return TRY(cudaGetLastError()) && TRY(cudaDeviceSynchronize());
}

static uint64_t fnv1a64(const std::string &data) {
    uint64_t hash = 0xcbf29ce484222325ull;
    for (unsigned char byte : data) {
        hash ^= byte;
        hash *= 0x100000001b3ull;
    }
    return hash;
}

// Runs the projection for `prompt`; false on a CUDA error.
static bool generate(const Model &model, const std::string &prompt, std::string &json) {
    uint64_t seed = fnv1a64(prompt);
    project<<<TOKENS, THREADS>>>(model.weights, model.rows, uint32_t(seed), uint32_t(seed >> 32),
                                 model.row_ids, model.tokens);
    uint32_t row_ids[TOKENS], tokens[TOKENS];
    if (!TRY(cudaGetLastError()) ||
        !TRY(cudaMemcpy(row_ids, model.row_ids, sizeof row_ids, cudaMemcpyDeviceToHost)) ||
        !TRY(cudaMemcpy(tokens, model.tokens, sizeof tokens, cudaMemcpyDeviceToHost))) {
        return false;
    }
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "{\"seed\": \"%016llx\", \"row_ids\": [", (unsigned long long)seed);
    json = buffer;
    for (int t = 0; t < TOKENS; t++) json += (t ? ", " : "") + std::to_string(row_ids[t]);
    json += "], \"tokens\": [";
    for (int t = 0; t < TOKENS; t++) json += (t ? ", " : "") + std::to_string(tokens[t]);
    json += "]}\n";
    return true;
}

static void send_all(int fd, const std::string &data) {
    size_t sent = 0;
    while (sent < data.size()) {
        ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // the client went away; nothing more to do for it
        sent += size_t(n);
    }
}

static void respond(int fd, int status, const char *reason, const std::string &body,
                    const char *type = "application/json") {
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + type +
                       "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    send_all(fd, head + body);
}

static void respond_error(int fd, int status, const char *reason, const std::string &message) {
    respond(fd, status, reason, "{\"error\": \"" + message + "\"}\n");
}

struct Request {
    std::string method, path, body;
};

// Reads one request; on a malformed one answers it and returns false.
static bool read_request(int fd, Request &request) {
    std::string data;
    size_t header_end;
    char buffer[4096];
    while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
        if (data.size() > MAX_HEADER) {
            respond_error(fd, 431, "Request Header Fields Too Large", "headers exceed 16 KiB");
            return false;
        }
        ssize_t n = recv(fd, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR && !stopping) continue;
        if (n <= 0) return false;  // closed, timed out or interrupted: no one to answer
        data.append(buffer, size_t(n));
    }
    std::string head = data.substr(0, header_end);
    size_t line_end = head.find("\r\n");
    std::string line = head.substr(0, line_end);
    size_t space1 = line.find(' '), space2 = line.rfind(' ');
    if (space1 == std::string::npos || space2 == space1 || line.compare(space2 + 1, 5, "HTTP/") != 0) {
        respond_error(fd, 400, "Bad Request", "malformed request line");
        return false;
    }
    request.method = line.substr(0, space1);
    request.path = line.substr(space1 + 1, space2 - space1 - 1);

    size_t content_length = 0;
    std::string headers = line_end == std::string::npos ? "" : head.substr(line_end + 2);
    size_t pos = 0;
    while (pos < headers.size()) {
        size_t end = headers.find("\r\n", pos);
        if (end == std::string::npos) end = headers.size();
        std::string field = headers.substr(pos, end - pos);
        pos = end + 2;
        size_t colon = field.find(':');
        if (colon == std::string::npos) continue;
        std::string name = field.substr(0, colon);
        for (char &c : name) c = char(std::tolower((unsigned char)c));
        std::string value = field.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        if (name == "transfer-encoding") {
            respond_error(fd, 411, "Length Required", "send the body with Content-Length, not chunked");
            return false;
        }
        if (name == "content-length") {
            char *after = nullptr;
            unsigned long long length = std::strtoull(value.c_str(), &after, 10);
            if (value.empty() || *after != '\0' || length > MAX_BODY) {
                respond_error(fd, 413, "Payload Too Large", "the body must be at most 65536 bytes");
                return false;
            }
            content_length = size_t(length);
        }
    }
    request.body = data.substr(header_end + 4);
    while (request.body.size() < content_length) {
        ssize_t n = recv(fd, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR && !stopping) continue;
        if (n <= 0) return false;
        request.body.append(buffer, size_t(n));
    }
    request.body.resize(content_length);
    return true;
}

// Answers one connection; false when a CUDA error means the server must stop.
static bool serve(int fd, const Model &model) {
    Request request;
    if (!read_request(fd, request)) return true;
    if (request.path == "/healthz") {
        if (request.method != "GET") return respond_error(fd, 405, "Method Not Allowed", "use GET /healthz"), true;
        respond(fd, 200, "OK",
                "{\"status\": \"ok\", \"model_bytes\": " + std::to_string(model.bytes()) +
                    ", \"rows\": " + std::to_string(model.rows) + ", \"cols\": " + std::to_string(COLS) + "}\n");
        return true;
    }
    if (request.path == "/generate") {
        if (request.method != "POST") return respond_error(fd, 405, "Method Not Allowed", "use POST /generate"), true;
        std::string json;
        if (!generate(model, request.body, json)) {
            respond_error(fd, 500, "Internal Server Error", "CUDA error; see the server's stderr");
            return false;
        }
        respond(fd, 200, "OK", json);
        return true;
    }
    respond_error(fd, 404, "Not Found", "unknown path; use GET /healthz or POST /generate");
    return true;
}

static long env_number(const char *name, long fallback, long min, long max) {
    const char *text = std::getenv(name);
    if (text == nullptr || *text == '\0') {
        if (fallback >= 0) return fallback;
        std::fprintf(stderr, "lab: %s is not set; set it to the port to listen on (0 picks a free one)\n", name);
        std::exit(EXIT_BAD_CONFIG);
    }
    char *after = nullptr;
    long value = std::strtol(text, &after, 10);
    if (*after != '\0' || value < min || value > max) {
        std::fprintf(stderr, "lab: %s=\"%s\" is invalid; use a whole number from %ld to %ld\n", name, text, min, max);
        std::exit(EXIT_BAD_CONFIG);
    }
    return value;
}

static int listen_on(long port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(uint16_t(port));
    if (fd < 0 || bind(fd, (sockaddr *)&address, sizeof address) != 0 || listen(fd, 64) != 0) {
        std::fprintf(stderr, "lab: cannot listen on 127.0.0.1:%ld: %s; choose another PORT\n", port, std::strerror(errno));
        std::exit(EXIT_BAD_CONFIG);
    }
    return fd;
}

int main() {
    long port = env_number("PORT", -1, 0, 65535);
    long mib = env_number("LAB_MODEL_MIB", 64, 1, 4096);

    // No SA_RESTART: a signal interrupts accept() so the loop sees `stopping`.
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);

    int listener = listen_on(port);
    Model model;
    if (!load_model(model, unsigned(mib))) return EXIT_CUDA_ERROR;
    sockaddr_in bound{};
    socklen_t length = sizeof bound;
    getsockname(listener, (sockaddr *)&bound, &length);
    std::printf("lab: listening on http://127.0.0.1:%u (pid %ld, model %ld MiB, %u rows)\n", ntohs(bound.sin_port),
                long(getpid()), mib, model.rows);
    std::fflush(stdout);

    int exit_code = 0;
    while (!stopping) {
        int client = accept(listener, nullptr, nullptr);
        if (client < 0) continue;  // EINTR (maybe a stop signal) or a connection that went away
        timeval timeout{10, 0};    // a stalled client must not hold up the others for long
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        bool healthy = serve(client, model);
        close(client);
        if (!healthy) {
            exit_code = EXIT_CUDA_ERROR;
            break;
        }
    }
    close(listener);
    if (exit_code == 0 && !(TRY(cudaFree(model.weights)) && TRY(cudaFree(model.row_ids)) && TRY(cudaFree(model.tokens))))
        exit_code = EXIT_CUDA_ERROR;
    std::fprintf(stderr, "lab: stopped\n");
    return exit_code;
}
