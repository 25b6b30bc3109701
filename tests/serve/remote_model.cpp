// lmtk::remote_model against the real `lmtk serve-model` (started from $LMTK_CLI on 127.0.0.1
// with --port 0; the port is read from its start-up lines) and against a local pipeline on the
// same model: greedy text, streaming, stop strings, server errors, no server.
#include <catch2/catch.hpp>

#ifdef LMTK_HAVE_SERVE
#include <lmtk/lmtk.hpp>
#include <lmtk/serve/remote.hpp>

#include "support/models.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using Catch::Matchers::Contains;

namespace {

using greedy_pipeline = lmtk::pipeline<lmtk::quant::default_set, lmtk::target::cpu<>, lmtk::sample::chain<lmtk::sample::greedy>>;
static_assert(lmtk::text_generator<greedy_pipeline>);
static_assert(lmtk::text_generator<lmtk::remote_model>);

constexpr std::size_t n_ctx = 64;  // small, so that a too-long prompt is cheap to write

// One `lmtk serve-model` child process. Its stderr is drained on a thread (a full pipe would
// block the server's request log); the destructor always stops it: SIGTERM, then SIGKILL.
class server_process {
public:
    explicit server_process(std::vector<std::string> extra = {}) {
        const char* cli = std::getenv("LMTK_CLI");
        if (!cli || !*cli) FAIL("LMTK_CLI is not set (CTest sets it to the built lmtk)");
        std::vector<std::string> args = {cli, "serve-model", lmtk::test::model_path("stories260K.gguf"), "--host", "127.0.0.1",
                                         "--port", "0", "-t", "1", "-c", std::to_string(n_ctx)};
        args.insert(args.end(), extra.begin(), extra.end());
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);  // CLOEXEC: no other child may hold the write end
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
#ifdef __linux__
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
#endif
            ::dup2(fds[1], 2);
            const int null = ::open("/dev/null", O_WRONLY);
            if (null >= 0) ::dup2(null, 1);
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(fds[1]);
        fd_ = fds[0];
        read_port();
        drain_ = std::thread([this] {
            char buf[4096];
            for (ssize_t n; (n = ::read(fd_, buf, sizeof buf)) > 0;) {
                const std::lock_guard lk(m_);
                log_.append(buf, std::size_t(n));
            }
        });
    }
    server_process(const server_process&) = delete;
    server_process& operator=(const server_process&) = delete;
    ~server_process() { stop(); }

    int port() const { return port_; }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
    std::string log() const {
        const std::lock_guard lk(m_);
        return log_;
    }

private:
    // Reads start-up lines until "OpenAI    http://127.0.0.1:PORT/v1", at most 30 s.
    void read_port() {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        const std::string mark = "OpenAI    http://127.0.0.1:";
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 200) <= 0) continue;
            char buf[4096];
            const ssize_t n = ::read(fd_, buf, sizeof buf);
            if (n <= 0) break;  // the server exited
            log_.append(buf, std::size_t(n));
            if (const std::size_t at = log_.find(mark); at != std::string::npos && log_.find('\n', at) != std::string::npos) {
                port_ = std::atoi(log_.c_str() + at + mark.size());
                return;
            }
        }
        const std::string seen = log_;
        stop();
        FAIL("the server did not report its port:\n" << seen);
    }

    void stop() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int status = 0;
            bool reaped = false;
            for (int i = 0; i < 100 && !reaped; ++i) {
                reaped = ::waitpid(pid_, &status, WNOHANG) == pid_;
                if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            if (!reaped) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
            }
            pid_ = -1;
        }
        if (drain_.joinable()) drain_.join();  // EOF once the server is gone
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    pid_t pid_ = -1;
    int fd_ = -1;
    int port_ = 0;
    std::thread drain_;
    mutable std::mutex m_;
    std::string log_;
};

// One server and one local pipeline for the whole file: starting either is most of the cost.
server_process& server() {
    static server_process s;
    return s;
}
greedy_pipeline& local() {
    static greedy_pipeline p = [] {
        lmtk::pipeline_options o;
        o.context.n_ctx = n_ctx;
        o.context.n_threads = 1;
        return greedy_pipeline(lmtk::test::model_path("stories260K.gguf"), o);
    }();
    return p;
}
lmtk::remote_model greedy_remote() { return lmtk::remote_model(server().url(), {.sampling = {.temperature = 0.0f}}); }

// The point of the concept: one function for either kind of model.
template <lmtk::text_generator G>
std::string streamed(G& g, const std::string& prompt, const lmtk::generate_options& opt) {
    std::string text;
    for (const std::string& piece : g.stream(prompt, opt)) text += piece;
    return text;
}

// A port on 127.0.0.1 that nothing listens on: bound by the OS, then released.
int closed_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(s >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    ::close(s);
    return ntohs(a.sin_port);
}

}  // namespace

TEST_CASE("greedy remote generate matches the local pipeline", "[serve][remote]") {
    auto remote = greedy_remote();
    for (const char* prompt : {"Once upon a time", "The little dog"}) {
        CAPTURE(prompt);
        const lmtk::generate_options opt{.max_tokens = 24};
        const lmtk::completion want = local().generate(prompt, opt);
        const lmtk::completion got = remote.generate(prompt, opt);
        CHECK(got.text == want.text);
        CHECK(got.finish == want.finish);
        CHECK(got.n_prompt_tokens == want.n_prompt_tokens);
        CHECK(got.time.n_prompt == want.n_prompt_tokens);
        CHECK(got.time.n_eval == want.tokens.size());
        CHECK(got.tokens.empty());  // the completions API returns text, not ids
        INFO(server().log());
    }
}

TEST_CASE("stream pieces concatenate to generate's text", "[serve][remote]") {
    auto remote = greedy_remote();
    const lmtk::generate_options opt{.max_tokens = 20};
    std::vector<std::string> callback_pieces;
    const lmtk::completion c = remote.generate("Once upon a time", opt, [&](std::string_view s) { callback_pieces.emplace_back(s); });
    std::string joined;
    for (const auto& p : callback_pieces) joined += p;
    CHECK(joined == c.text);
    CHECK(callback_pieces.size() > 1);  // pieces arrive one by one, not as one block at the end

    auto g = remote.stream("Once upon a time", opt);
    std::string text;
    std::size_t pieces = 0;
    for (const std::string& piece : g) {
        CHECK_FALSE(piece.empty());
        text += piece;
        ++pieces;
    }
    CHECK(text == c.text);
    CHECK(pieces > 1);
    CHECK(g.finish() == c.finish);
    CHECK(g.n_prompt_tokens() == c.n_prompt_tokens);
    std::string more;
    CHECK_FALSE(g.next(more));  // stays ended

    // The same template code on both sides gives the same text.
    CHECK(streamed(remote, "The little dog", opt) == streamed(local(), "The little dog", opt));
    // Base URLs as OpenAI clients take them ("/v1", trailing slash) reach the same endpoint.
    lmtk::remote_model v1(server().url() + "/v1/", {.sampling = {.temperature = 0.0f}});
    CHECK(v1.generate("Once upon a time", opt).text == c.text);
}

TEST_CASE("stop strings end remote generations where local ones end", "[serve][remote]") {
    auto remote = greedy_remote();
    const std::string prompt = "Once upon a time";
    const std::string full = local().generate(prompt, {.max_tokens = 40}).text;
    REQUIRE(full.size() > 12);
    const std::string stop = full.substr(full.size() / 2, 3);
    const std::string want = full.substr(0, full.find(stop));
    CAPTURE(full, stop);

    const lmtk::generate_options opt{.max_tokens = 40, .stop = {stop}};
    const lmtk::completion l = local().generate(prompt, opt);
    const lmtk::completion r = remote.generate(prompt, opt);
    CHECK(l.text == want);
    CHECK(r.text == want);
    CHECK(l.finish == lmtk::finish_reason::stop_string);
    CHECK(r.finish == lmtk::finish_reason::stop_string);
    CHECK(streamed(remote, prompt, opt) == want);

    // Without the stop string the same request runs into the token limit.
    const lmtk::completion limited = remote.generate(prompt, {.max_tokens = 5});
    CHECK(limited.finish == lmtk::finish_reason::max_tokens);
    CHECK(limited.time.n_eval == 5);
}

TEST_CASE("server errors become lmtk::error with the server's message", "[serve][remote]") {
    auto remote = greedy_remote();
    std::string long_prompt;
    for (int i = 0; i < 40; ++i) long_prompt += "Once upon a time there was a dog. ";
    CHECK_THROWS_AS(remote.generate(long_prompt), lmtk::error);
    CHECK_THROWS_WITH(remote.generate(long_prompt), Contains("does not fit in the context of 64 tokens") && Contains("HTTP 400"));
    // stream() waits for the status, so the error comes from the call, like a local pipeline's.
    CHECK_THROWS_WITH(remote.stream(long_prompt), Contains("does not fit in the context"));
    CHECK_THROWS_WITH(local().stream(long_prompt), Contains("does not fit in the context"));

    lmtk::remote_model bad(server().url(), {.sampling = {.top_p = 2.0f}});
    CHECK_THROWS_WITH(bad.generate("Once"), Contains("top_p"));

    // The server still serves after refusing.
    CHECK_FALSE(remote.generate("Once", {.max_tokens = 4}).text.empty());
}

TEST_CASE("no server: lmtk::error", "[serve][remote]") {
    lmtk::remote_model nobody("127.0.0.1", closed_port());
    CHECK_THROWS_AS(nobody.generate("Once"), lmtk::error);
    CHECK_THROWS_WITH(nobody.generate("Once"), Contains("cannot connect") && Contains("127.0.0.1"));
    CHECK_THROWS_WITH(nobody.stream("Once"), Contains("cannot connect"));
    CHECK_THROWS_AS(lmtk::remote_model("ftp://127.0.0.1:1"), lmtk::error);
}

TEST_CASE("an abandoned stream ends its request at once", "[serve][remote]") {
    auto remote = greedy_remote();
    const auto t0 = std::chrono::steady_clock::now();
    {
        auto g = remote.stream("Once upon a time", {.max_tokens = -1, .ignore_eos = true});
        std::string piece;
        REQUIRE(g.next(piece));
    }  // the destructor closes the connection and joins the reader
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(s < 5.0);
    const lmtk::generate_options opt{.max_tokens = 8};
    CHECK(remote.generate("Once upon a time", opt).text == local().generate("Once upon a time", opt).text);
}

#else
TEST_CASE("remote_model needs cpp-httplib", "[serve][remote]") {
    WARN("skipped: lmtk was configured without cpp-httplib (no lmtk::serve target)");
}
#endif
