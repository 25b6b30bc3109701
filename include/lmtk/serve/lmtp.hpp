#pragma once
// LMTP, LMQL's Language Model Transport Protocol (notes: shared/spec/lmtp.md), served on the
// same port as the HTTP APIs: a WebSocket upgrade of `GET /` becomes an LMTP session, a plain
// `GET /` is still Ollama's "Ollama is running".
//
// Each text frame is "COMMAND JSON". The client tokenizes; only token ids travel.
//   GENERATE {stream_id, prompt: [ids], max_tokens, temperature, top_logprobs, logit_bias?, ...}
//       -> TOKEN [{token, stream_id, logprob, finish_reason, top_logprobs}] per generated token;
//          the last one has finish_reason "stop" (the end token itself) or "length".
//   SCORE    {stream_id, prompt: [ids], scored: [ids]}
//       -> one TOKEN per scored id with log P(id | everything before it); "stop" on the last.
//   MODEL_INFO {stream_id, ...}
//       -> MSG [{stream_id, model_info: {...}}]
// A failed GENERATE or SCORE gets TOKEN [{stream_id, error}] (the client raises it); anything
// else malformed gets MSG [{stream_id, error}].
//
// Streams of one socket are independent requests to the engine: each takes a place in its
// queue (a full queue answers that stream with an error at once) and runs on its own thread,
// so they batch with each other and with HTTP requests. When the socket closes, its streams
// are cancelled and their slots freed.
//
// Sampling as LMQL's reference server does it: logit_bias is added to the logits, temperature
// 0 is argmax, otherwise plain softmax sampling (no top-k/top-p/min-p unless the message sets
// top_k/top_p; repetition_penalty, presence_penalty and frequency_penalty are honoured too).
// logprob and top_logprobs are log_softmax(logits + logit_bias), before temperature.
#include <lmtk/serve/service.hpp>
#include <lmtk/serve/websocket.hpp>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <dirent.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lmtk::serve::lmtp {

// A WebSocket opening handshake (RFC 6455 4.2.1), as far as the server must check it.
inline bool is_upgrade(const httplib::Request& req) {
    auto has_token = [](std::string v, std::string_view token) {
        for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return v.find(token) != std::string::npos;
    };
    return has_token(req.get_header_value("Upgrade"), "websocket") && has_token(req.get_header_value("Connection"), "upgrade");
}

namespace detail {

// Is `fd` the TCP connection between local and remote (as httplib printed them)?
inline bool same_endpoint(const sockaddr_storage& sa, const std::string& addr, int port) {
    if (sa.ss_family == AF_INET) {
        const auto& in = reinterpret_cast<const sockaddr_in&>(sa);
        in_addr want{};
        return ntohs(in.sin_port) == port && ::inet_pton(AF_INET, addr.c_str(), &want) == 1 &&
               want.s_addr == in.sin_addr.s_addr;
    }
    if (sa.ss_family == AF_INET6) {
        const auto& in6 = reinterpret_cast<const sockaddr_in6&>(sa);
        in6_addr want{};
        std::string a = addr.substr(0, addr.find('%'));  // a link-local scope suffix
        if (ntohs(in6.sin6_port) != port) return false;
        if (::inet_pton(AF_INET6, a.c_str(), &want) == 1) return std::memcmp(&want, &in6.sin6_addr, sizeof want) == 0;
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d or as a.b.c.d.
        in_addr v4{};
        if (::inet_pton(AF_INET, a.c_str(), &v4) == 1)
            return IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr) && std::memcmp(&v4, in6.sin6_addr.s6_addr + 12, 4) == 0;
    }
    return false;
}

inline bool is_connection(int fd, const httplib::Request& req) {
    sockaddr_storage local{}, remote{};
    socklen_t ll = sizeof local, rl = sizeof remote;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) return false;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &rl) != 0) return false;
    return same_endpoint(local, req.local_addr, req.local_port) && same_endpoint(remote, req.remote_addr, req.remote_port);
}

// The socket a request arrived on. cpp-httplib (0.11, Debian 12's) keeps it private and has no
// upgrade hook, but a TCP connection is named uniquely by its two endpoints, which the request
// does carry: the open descriptor with those endpoints is the one. -1 when none matches.
inline int find_socket(const httplib::Request& req) {
    if (DIR* d = ::opendir("/proc/self/fd")) {
        int found = -1;
        while (const dirent* e = ::readdir(d)) {
            char* end = nullptr;
            const long fd = std::strtol(e->d_name, &end, 10);
            if (end == e->d_name || *end != '\0' || fd == ::dirfd(d)) continue;
            if (is_connection(static_cast<int>(fd), req)) {
                found = static_cast<int>(fd);
                break;
            }
        }
        ::closedir(d);
        return found;
    }
    for (int fd = 3; fd < 65536; ++fd)  // no /proc: try every descriptor
        if (is_connection(fd, req)) return fd;
    return -1;
}

inline bool send_all(int fd, std::string_view s) {
    while (!s.empty()) {
        const ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        s.remove_prefix(std::size_t(n));
    }
    return true;
}

}  // namespace detail

// log-probabilities cannot be -inf in the client's comparisons: clamp as the engine does.
inline json token_entry(std::int64_t stream_id, const token_logprobs& lp, const char* finish) {
    json top = json::object();
    top[std::to_string(lp.id)] = lp.logprob;
    for (const auto& [id, v] : lp.top) top[std::to_string(id)] = v;
    return json{{"token", lp.id},
                {"stream_id", stream_id},
                {"logprob", lp.logprob},
                {"finish_reason", finish ? json(finish) : json(nullptr)},
                {"top_logprobs", std::move(top)}};
}

template <class Service>
class session {
public:
    session(Service& svc, ws::connection& conn, const std::atomic<bool>& server_stopping)
        : svc_(svc), conn_(conn), server_stopping_(server_stopping) {}
    session(const session&) = delete;
    session& operator=(const session&) = delete;
    ~session() { join_all(); }

    // Serves the socket until the client closes it or the server stops; then cancels and
    // waits for this socket's streams.
    void run() {
        while (auto m = conn_.receive(&server_stopping_)) {
            reap();
            if (m->type != ws::opcode::text) continue;  // LMTP is text only; binary frames are ignored
            handle(m->data);
        }
        gone_ = true;
        if (server_stopping_) conn_.close(1001, "server shutting down");
        join_all();
    }

private:
    using engine_type = std::remove_reference_t<decltype(std::declval<Service&>().eng())>;
    using ticket_type = typename engine_type::ticket;

    void handle(const std::string& text) {
        const std::size_t sp = text.find(' ');
        const std::string cmd = text.substr(0, sp);
        json payload = sp == std::string::npos ? json() : json::parse(text.substr(sp + 1), nullptr, false);
        std::int64_t sid = -1;
        if (payload.is_object()) {
            if (auto it = payload.find("stream_id"); it != payload.end() && it->is_number_integer()) sid = it->get<std::int64_t>();
        }
        if (cmd != "GENERATE" && cmd != "SCORE" && cmd != "MODEL_INFO") {
            send_msg(json{{"stream_id", sid}, {"error", "Unknown command: " + cmd}});
            return;
        }
        const bool stream_cmd = cmd != "MODEL_INFO";
        auto refuse = [&](const std::string& why) {
            log(cmd, sid, "error: " + why);
            if (stream_cmd) send_tokens(json::array({json{{"stream_id", sid}, {"error", why}}}));
            else send_msg(json{{"stream_id", sid}, {"error", why}});
        };
        if (!payload.is_object()) return refuse(cmd + " needs a JSON object after the command");
        if (sid < 0) return refuse("'stream_id' must be a non-negative integer");
        if (cmd == "MODEL_INFO") {
            send_msg(json{{"stream_id", sid}, {"model_info", model_info()}});
            log(cmd, sid, "");
            return;
        }
        request rq;
        try {
            rq = cmd == "GENERATE" ? read_generate(payload) : read_score(payload);
        } catch (const http_error& e) {
            return refuse(e.what());
        }
        // Admission now, in order of arrival; a full queue answers at once.
        std::optional<ticket_type> ticket;
        try {
            ticket.emplace(svc_.eng().enter());
        } catch (const queue_full& e) {
            return refuse(e.what());
        }
        auto& w = workers_.emplace_back();
        w.thread = std::thread([this, &w, cmd, sid, rq = std::move(rq),
                                t = std::make_shared<ticket_type>(std::move(*ticket))]() mutable {
            run_stream(cmd, sid, rq, *t);
            t.reset();  // leave the queue before announcing the end
            w.done = true;
        });
    }

    request read_generate(const json& p) {
        const fields f(p);
        request rq = svc_.new_request();
        rq.prompt = read_ids(f, "prompt");
        const int max_tokens = f.bounded("max_tokens", 1, std::numeric_limits<std::int32_t>::max()).value_or(16);
        rq.max_tokens = max_tokens;
        // LMQL's reference sampling: plain softmax (argmax at temperature 0), no truncation unless
        // the message asks; the shared reader takes temperature, top_k, top_p, the penalties
        // and seed under the names LMQL forwards, except its repetition_penalty.
        sampling_params& s = rq.sampling;
        s = sampling_params{};
        s.temperature = 0.0f;
        s.top_k = 0;
        s.top_p = 1.0f;
        s.min_p = 0.0f;
        read_sampling(f, s);
        if (auto v = f.real("repetition_penalty")) {
            if (*v <= 0.0f) f.bad("repetition_penalty", "must be > 0", *f.find("repetition_penalty"));
            s.repeat_penalty = *v;
        }
        s.logit_bias = read_bias(f);
        rq.top_logprobs = f.bounded("top_logprobs", 0, 100).value_or(1);
        if (rq.prompt.size() + std::size_t(max_tokens) > svc_.eng().n_ctx())
            throw http_error(400, "the prompt (" + std::to_string(rq.prompt.size()) + " tokens) plus max_tokens (" +
                                      std::to_string(max_tokens) + ") exceed the context of " +
                                      std::to_string(svc_.eng().n_ctx()) + " tokens");
        return rq;
    }

    request read_score(const json& p) {
        const fields f(p);
        request rq = svc_.new_request();
        rq.sampling = sampling_params{};
        rq.prompt = read_ids(f, "prompt", /*may_be_empty=*/true);
        const std::vector<std::int32_t> scored = read_ids(f, "scored");
        rq.prompt.insert(rq.prompt.end(), scored.begin(), scored.end());
        rq.n_scored = scored.size();
        rq.sampling.logit_bias = read_bias(f);
        rq.top_logprobs = 0;
        if (rq.prompt.size() > svc_.eng().n_ctx())
            throw http_error(400, "prompt and scored tokens (" + std::to_string(rq.prompt.size()) +
                                      ") exceed the context of " + std::to_string(svc_.eng().n_ctx()) + " tokens");
        return rq;
    }

    std::vector<std::int32_t> read_ids(const fields& f, const char* key, bool may_be_empty = false) {
        const json* v = f.array(key);
        if (!v) bad_request(key, std::string("'") + key + "' (an array of token ids) is required");
        std::vector<std::int32_t> ids;
        ids.reserve(v->size());
        for (const json& t : *v) {
            if (!t.is_number_integer() || t.get<std::int64_t>() < 0 || std::size_t(t.get<std::int64_t>()) >= svc_.n_vocab())
                bad_request(key, std::string("'") + key + "' holds " + show(t) + ", not a token id below the vocabulary size " +
                                     std::to_string(svc_.n_vocab()) + " (client and server tokenizers differ?)");
            ids.push_back(static_cast<std::int32_t>(t.get<std::int64_t>()));
        }
        if (ids.empty() && !may_be_empty) bad_request(key, std::string("'") + key + "' is empty");
        return ids;
    }

    // Additive biases; string keys as the client sends them. Ids outside the vocabulary are
    // ignored, as LMQL's reference server does (its masks can be longer than a model's vocab).
    std::vector<sample::token_bias> read_bias(const fields& f) {
        std::vector<sample::token_bias> out;
        const json* v = f.object("logit_bias");
        if (!v) return out;
        out.reserve(v->size());
        for (const auto& [k, b] : v->items()) {
            char* end = nullptr;
            const long long id = std::strtoll(k.c_str(), &end, 10);
            if (k.empty() || *end != '\0') bad_request("logit_bias", "'logit_bias' keys must be token ids, got \"" + k + "\"");
            if (!b.is_number()) bad_request("logit_bias", "'logit_bias' values must be numbers, got " + show(b));
            if (id < 0 || std::size_t(id) >= svc_.n_vocab()) continue;
            const double x = b.template get<double>();
            out.push_back({static_cast<std::int32_t>(id), std::isfinite(x) ? static_cast<float>(std::clamp(x, -1e6, 1e6))
                                                                            : (x > 0 ? 1e6f : -std::numeric_limits<float>::infinity())});
        }
        return out;
    }

    void run_stream(const std::string& cmd, std::int64_t sid, const request& rq, ticket_type& ticket) {
        const auto t0 = std::chrono::steady_clock::now();
        try {
            auto lease = ticket.wait(rq.prompt, [this] { return !gone_ && conn_.open(); });
            if (!lease) return;
            // One token is held back so that the stream's last one can carry its finish_reason.
            std::optional<token_logprobs> held;
            auto send_held = [&](const char* finish) {
                return !held || send_tokens(json::array({token_entry(sid, *held, finish)}));
            };
            result r = svc_.eng().run(**lease, rq, [&](std::string_view, std::span<const token_logprobs> lp) {
                if (gone_ || !conn_.open()) return false;
                for (const token_logprobs& t : lp) {
                    if (!send_held(nullptr)) return false;
                    held = t;
                }
                return true;
            });
            if (r.cancelled) {
                log(cmd, sid, "cancelled: socket closed");
                return;
            }
            if (cmd == "SCORE") {  // the engine's logprobs carry the scored ids, in order
                for (std::size_t i = 0; i < r.logprobs.size(); ++i)
                    if (!send_tokens(json::array({token_entry(sid, r.logprobs[i], i + 1 == r.logprobs.size() ? "stop" : nullptr)})))
                        return;
                log(cmd, sid, "scored " + std::to_string(rq.n_scored) + " after " + std::to_string(rq.prompt.size() - rq.n_scored) +
                                  " (" + std::to_string(r.n_cached) + " cached), " + ms_since(t0));
                return;
            }
            const char* finish = "length";
            if (r.end_token) {
                if (!send_held(nullptr)) return;
                held = *r.end_token;
                finish = "stop";
            }
            if (!held) {  // nothing at all: cannot happen with max_tokens >= 1, but never hang the client
                send_tokens(json::array({json{{"stream_id", sid}, {"error", "no token was generated"}}}));
                return;
            }
            send_held(finish);
            log(cmd, sid, "slot " + std::to_string(r.slot) + ", prompt " + std::to_string(r.n_prompt) + " (" +
                              std::to_string(r.n_cached) + " cached), generated " + std::to_string(r.tokens.size() + (r.end_token ? 1 : 0)) +
                              ", " + finish + ", " + ms_since(t0));
        } catch (const std::exception& e) {
            send_tokens(json::array({json{{"stream_id", sid}, {"error", std::string("failed to ") + (cmd == "SCORE" ? "score" : "generate") +
                                                                                  " tokens: " + e.what()}}}));
            log(cmd, sid, std::string("error: ") + e.what());
        }
    }

    json model_info() const {
        const auto& hp = svc_.eng().model().hparams();
        const auto& v = svc_.tokenizer().vocabulary();
        return json{{"model", svc_.model_id()},
                    {"model_type", hp.arch},
                    {"constructor", "lmtk"},
                    {"lmtk", "0.1.0"},
                    {"n_ctx", svc_.eng().n_ctx()},
                    {"n_vocab", svc_.n_vocab()},
                    {"bos_token_id", v.bos()},
                    {"eos_token_id", v.eos()}};
    }

    bool send_tokens(const json& items) { return conn_.send_text("TOKEN " + dump(items)); }
    bool send_msg(const json& item) { return conn_.send_text("MSG " + dump(json::array({item}))); }

    static std::string ms_since(std::chrono::steady_clock::time_point t0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.1f ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        return buf;
    }

    void log(const std::string& cmd, std::int64_t sid, const std::string& note) const {
        if (!svc_.options().log_requests) return;
        std::fprintf(stderr, "lmtk: LMTP %s stream %lld%s%s\n", cmd.c_str(), static_cast<long long>(sid), note.empty() ? "" : " ",
                     note.c_str());
    }

    // Finished stream threads are joined as new commands arrive, so a long session does not
    // accumulate them.
    void reap() {
        for (auto it = workers_.begin(); it != workers_.end();) {
            if (it->done) {
                it->thread.join();
                it = workers_.erase(it);
            } else {
                ++it;
            }
        }
    }
    void join_all() {
        gone_ = true;
        for (auto& w : workers_)
            if (w.thread.joinable()) w.thread.join();
        workers_.clear();
    }

    struct worker {
        std::thread thread;
        std::atomic<bool> done{false};
    };

    Service& svc_;
    ws::connection& conn_;
    const std::atomic<bool>& server_stopping_;
    std::atomic<bool> gone_{false};
    // Touched by the session's own thread only (workers just set `done`). A list: a worker's
    // address stays valid while others come and go.
    std::list<worker> workers_;
};

// Serves one upgrade request of httplib's: answers the handshake on the raw socket, runs the
// session on this (httplib's) thread, then shuts the socket down so that httplib's own response
// for the request goes nowhere and it closes the connection.
template <class Service>
void serve_upgrade(Service& svc, const httplib::Request& req, httplib::Response& res, const std::atomic<bool>& stopping) {
    const std::string key = req.get_header_value("Sec-WebSocket-Key");
    if (req.get_header_value("Sec-WebSocket-Version") != "13" || key.empty()) {
        res.status = 400;
        res.set_header("Sec-WebSocket-Version", "13");
        res.set_content("WebSocket upgrade needs Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key", "text/plain");
        return;
    }
    const int fd = detail::find_socket(req);
    if (fd < 0) {
        res.status = 500;
        res.set_content("cannot find this request's socket to upgrade it", "text/plain");
        return;
    }
    const std::string answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: " + ws::accept_key(key) + "\r\n\r\n";
    res.status = 101;  // for the request log; httplib's write of it fails on the shut socket
    if (!detail::send_all(fd, answer)) return;
    if (svc.options().log_requests)
        std::fprintf(stderr, "lmtk: LMTP session from %s:%d\n", req.remote_addr.c_str(), req.remote_port);
    {
        // The connection object must not close httplib's descriptor (httplib does): give it a
        // duplicate and shut the original's connection down when the session ends.
        const int own = ::dup(fd);
        if (own < 0) return;
        ws::connection conn(own, ws::role::server);
        session<Service> s(svc, conn, stopping);
        s.run();
    }
    ::shutdown(fd, SHUT_RDWR);
}

}  // namespace lmtk::serve::lmtp
