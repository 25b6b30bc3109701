// lmtk::remote_model against the real `lmtk serve-model` (started from $LMTK_CLI on 127.0.0.1
// with --port 0; the port is read from its start-up lines) and against a local pipeline on the
// same model: greedy text, streaming, stop strings, server errors, no server; and against a
// scripted in-process server (lmtk's own transport with scripted routes) for the SSE and error
// cases the real one does not produce.
#include <catch2/catch.hpp>

#ifdef LMTK_HAVE_SERVE
#include <lmtk/lmtk.hpp>
#include <lmtk/client/remote.hpp>
#include <lmtk/client/remote_lmtp.hpp>
#include <lmtk/serve/transport.hpp>

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

#include <algorithm>
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
static_assert(lmtk::text_generator<lmtk::remote_lmtp_model>);

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

// ---- the same model over LMTP: ids on the wire, tokenized here with the model's own vocabulary --

lmtk::remote_lmtp_model lmtp_remote() {
    return lmtk::remote_lmtp_model("127.0.0.1:" + std::to_string(server().port()),
                                   lmtk::tokenize::load_tokenizer(lmtk::test::model_path("stories260K.gguf")));
}

TEST_CASE("LMTP: greedy remote generate matches the local pipeline, tokens included", "[serve][remote][lmtp]") {
    auto remote = lmtp_remote();
    for (const char* prompt : {"Once upon a time", "The little dog"}) {
        CAPTURE(prompt);
        const lmtk::generate_options opt{.max_tokens = 24};
        const lmtk::completion want = local().generate(prompt, opt);
        const lmtk::completion got = remote.generate(prompt, opt);
        CHECK(got.text == want.text);
        CHECK(got.tokens == want.tokens);
        CHECK(got.finish == want.finish);
        CHECK(got.n_prompt_tokens == want.n_prompt_tokens);
        CHECK(got.time.n_eval == want.tokens.size());
        INFO(server().log());
    }
    // Every URL form LMQL accepts for an endpoint.
    for (const std::string pre : {"ws://", "http://"}) {
        lmtk::remote_lmtp_model m(pre + "127.0.0.1:" + std::to_string(server().port()) + "/", remote.tokenizer());
        CHECK(m.generate("Once upon a time", {.max_tokens = 6}).tokens == local().generate("Once upon a time", {.max_tokens = 6}).tokens);
    }
}

TEST_CASE("LMTP: streams, stop strings, the context limit", "[serve][remote][lmtp]") {
    auto remote = lmtp_remote();
    const lmtk::generate_options opt{.max_tokens = 20};
    CHECK(streamed(remote, "The little dog", opt) == streamed(local(), "The little dog", opt));

    const std::string prompt = "Once upon a time";
    const std::string full = local().generate(prompt, {.max_tokens = 40}).text;
    REQUIRE(full.size() > 12);
    const std::string stop = full.substr(full.size() / 2, 3);
    const lmtk::completion r = remote.generate(prompt, {.max_tokens = 40, .stop = {stop}});
    CHECK(r.text == full.substr(0, full.find(stop)));
    CHECK(r.finish == lmtk::finish_reason::stop_string);

    // max_tokens < 0: until the context is full (the server tells its size), the end token banned.
    const lmtk::completion all = remote.generate(prompt, {.max_tokens = -1, .ignore_eos = true});
    CHECK(all.finish == lmtk::finish_reason::context_full);
    CHECK(all.n_prompt_tokens + all.tokens.size() == n_ctx);
    // LMTP refuses prompt + max_tokens beyond the context, so it stops one token before a local
    // pipeline, which also samples from the logits of the context's last position.
    const lmtk::completion local_all = local().generate(prompt, {.max_tokens = -1, .ignore_eos = true});
    REQUIRE(local_all.tokens.size() == all.tokens.size() + 1);
    CHECK(std::equal(all.tokens.begin(), all.tokens.end(), local_all.tokens.begin()));
}

TEST_CASE("LMTP: errors and scoring", "[serve][remote][lmtp]") {
    auto remote = lmtp_remote();
    std::string long_prompt;
    for (int i = 0; i < 40; ++i) long_prompt += "Once upon a time there was a dog. ";
    CHECK_THROWS_WITH(remote.generate(long_prompt, {.max_tokens = 4}), Contains("exceed the context of 64 tokens"));
    CHECK_THROWS_WITH(remote.stream(long_prompt, {.max_tokens = 4}), Contains("exceed the context"));
    CHECK_THROWS_WITH(lmtk::remote_lmtp_model("127.0.0.1:" + std::to_string(closed_port()), remote.tokenizer()).generate("x"),
                      Contains("cannot connect"));
    CHECK_THROWS_AS(lmtk::remote_lmtp_model("127.0.0.1", remote.tokenizer()), lmtk::error);

    // Scores of the greedy continuation: each is the best token's log-probability, so it is at
    // least that of any other token put in its place.
    const auto& tok = remote.tokenizer();
    const auto prompt = tok.encode("Once upon a time", true);
    const lmtk::completion c = local().generate("Once upon a time", {.max_tokens = 6});
    const std::vector<float> lp = remote.score(prompt, c.tokens);
    REQUIRE(lp.size() == c.tokens.size());
    for (std::size_t i = 0; i < lp.size(); ++i) {
        CHECK(lp[i] <= 0.0f);
        std::vector<std::int32_t> other(c.tokens.begin(), c.tokens.begin() + std::ptrdiff_t(i) + 1);
        other.back() = (other.back() + 1) % std::int32_t(tok.size());
        CHECK(remote.score(prompt, other).back() <= lp[i] + 1e-5f);
    }
    CHECK(remote.generate("Once", {.max_tokens = 3}).tokens.size() == 3);  // still serving
}

// A scripted server for what the real one does not do on demand: events split at odd places,
// CRLF line ends, error events mid-stream, llama.cpp's error shape, a stream cut short. Each
// scenario lives under its own path prefix, which remote_model keeps in front of /v1/completions.
class scripted_server {
public:
    scripted_server() {
        namespace http = lmtk::serve::http;
        auto sse = [](std::vector<std::string> writes) {
            return [writes](const http::request&, http::response& res) {
                res.set_stream("text/event-stream", [writes](http::body_sink& sink) {
                    for (const auto& w : writes) sink.write(w);
                });
            };
        };
        // "Hello world" in pieces cut mid-line and mid-JSON, CRLF, a comment, usage, [DONE].
        routes_.post("/split/v1/completions", sse({"data: {\"choices\":[{\"index\":0,\"te", "xt\":\"Hel\",\"finish_reason\":null}]}\r\n\r",
                                                 "\n: keep-alive\n\ndata: {\"choices\":[{\"index\":0,\"text\":\"lo world\",\"finish_reason\":null}]}\n\n",
                                                 "data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n"
                                                 "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DO",
                                                 "NE]\n\n"}));
        routes_.post("/midway/v1/completions", sse({"data: {\"choices\":[{\"index\":0,\"text\":\"partial\",\"finish_reason\":null}]}\n\n",
                                                  "data: {\"error\":{\"message\":\"the slot crashed\",\"type\":\"server_error\"}}\n\n",
                                                  "data: [DONE]\n\n"}));
        routes_.post("/cut/v1/completions", sse({"data: {\"choices\":[{\"index\":0,\"text\":\"abc\",\"finish_reason\":null}]}\n\n"}));
        routes_.post("/llamacpp/v1/completions", [](const http::request&, http::response& res) {
            res.status = 500;
            res.set_content(R"({"error":{"code":500,"message":"Only one completion choice is allowed","type":"server_error"}})",
                            "application/json");
        });
        // Echoes what it was sent, as the one piece of text.
        routes_.post("/echo/v1/completions", [](const http::request& req, http::response& res) {
            nlohmann::json seen = nlohmann::json::parse(req.body);
            seen["authorization"] = req.header("Authorization");
            const nlohmann::json ev{{"choices", {{{"index", 0}, {"text", seen.dump()}, {"finish_reason", "stop"}}}}};
            res.set_content("data: " + ev.dump() + "\n\ndata: [DONE]\n\n", "text/event-stream");
        });
        http_ = std::make_unique<lmtk::serve::transport>(lmtk::serve::transport_options{}, routes_, nullptr, nullptr,
                                                          [](int, const std::string& m) { return "{\"error\":{\"message\":\"" + m + "\"}}"; });
        port_ = http_->bind("127.0.0.1", 0);
        REQUIRE(port_ > 0);
        thread_ = std::thread([this] { http_->run(); });
    }
    ~scripted_server() {
        http_->stop();
        thread_.join();
    }
    std::string url(const std::string& scenario) const { return "http://127.0.0.1:" + std::to_string(port_) + "/" + scenario; }

private:
    lmtk::serve::http::router routes_;
    std::unique_ptr<lmtk::serve::transport> http_;
    int port_ = 0;
    std::thread thread_;
};

TEST_CASE("SSE events split anywhere, comments and CRLF are read", "[serve][remote]") {
    scripted_server fake;
    lmtk::remote_model m(fake.url("split"));
    std::vector<std::string> pieces;
    const lmtk::completion c = m.generate("x", {.max_tokens = 2}, [&](std::string_view s) { pieces.emplace_back(s); });
    CHECK(c.text == "Hello world");
    CHECK(pieces == std::vector<std::string>{"Hel", "lo world"});
    CHECK(c.finish == lmtk::finish_reason::max_tokens);
    CHECK(c.n_prompt_tokens == 3);
    CHECK(c.time.n_eval == 2);
    // "length" with fewer tokens than asked for: the context filled up.
    CHECK(m.generate("x", {.max_tokens = 10}).finish == lmtk::finish_reason::context_full);
    CHECK(streamed(m, "x", {.max_tokens = 2}) == "Hello world");
}

TEST_CASE("errors inside a stream, other error shapes and cut streams throw", "[serve][remote]") {
    scripted_server fake;
    lmtk::remote_model midway(fake.url("midway"));
    CHECK_THROWS_WITH(midway.generate("x"), Contains("the slot crashed"));
    // The pull stream hands out what came before the error, then throws.
    auto g = midway.stream("x");
    std::string piece;
    REQUIRE(g.next(piece));
    CHECK(piece == "partial");
    CHECK_THROWS_WITH(g.next(piece), Contains("the slot crashed"));

    CHECK_THROWS_WITH(lmtk::remote_model(fake.url("llamacpp")).generate("x"),
                      Contains("HTTP 500") && Contains("Only one completion choice is allowed"));
    CHECK_THROWS_WITH(lmtk::remote_model(fake.url("cut")).generate("x"), Contains("ended before"));
    CHECK_THROWS_WITH(lmtk::remote_model(fake.url("nothing-here")).generate("x"), Contains("HTTP 404"));
}

TEST_CASE("generate_options and remote_sampling become request fields", "[serve][remote]") {
    scripted_server fake;
    lmtk::remote_model m(fake.url("echo") + "/v1", {.api_key = "sk-test", .model = "tiny", .sampling = {.temperature = 0.5f, .top_p = 0.9f}});
    lmtk::generate_options opt;
    opt.max_tokens = -5;
    opt.stop = {"\n", "END"};
    opt.seed = 42;
    opt.ignore_eos = true;
    const auto sent = nlohmann::json::parse(m.generate("Once", opt).text);
    CHECK(sent["prompt"] == "Once");
    CHECK(sent["max_tokens"] == -1);
    CHECK(sent["stop"] == nlohmann::json::array({"\n", "END"}));
    CHECK(sent["seed"] == 42);
    CHECK(sent["ignore_eos"] == true);
    CHECK(sent["temperature"].get<double>() == Approx(0.5));
    CHECK(sent["top_p"].get<double>() == Approx(0.9));
    CHECK(sent["model"] == "tiny");
    CHECK(sent["stream"] == true);
    CHECK(sent["stream_options"]["include_usage"] == true);
    CHECK(sent["authorization"] == "Bearer sk-test");
    CHECK(m.generate("Once", opt).finish == lmtk::finish_reason::stop_string);  // "stop" with stop strings

    const auto plain = nlohmann::json::parse(lmtk::remote_model(fake.url("echo")).generate("Once").text);
    CHECK(plain["max_tokens"] == 128);  // generate_options' default, not the API's 16
    CHECK_FALSE(plain.contains("temperature"));
    CHECK_FALSE(plain.contains("stop"));
    CHECK_FALSE(plain.contains("seed"));
    CHECK(plain["authorization"] == "");
    CHECK(lmtk::remote_model(fake.url("echo")).generate("Once").finish == lmtk::finish_reason::end_of_text);
}

#else
TEST_CASE("remote_model needs lmtk::serve", "[serve][remote]") {
    WARN("skipped: lmtk was configured without the lmtk::serve target");
}
#endif
