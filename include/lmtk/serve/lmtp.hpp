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
#include <lmtk/serve/http.hpp>
#include <lmtk/serve/service.hpp>
#include <lmtk/serve/ws_channel.hpp>

#include <boost/asio.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace lmtk::serve::lmtp {

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
std::vector<std::int32_t> read_ids(Service& svc, const fields& f, const char* key, bool may_be_empty = false) {
    const json* v = f.array(key);
    if (!v) bad_request(key, std::string("'") + key + "' (an array of token ids) is required");
    std::vector<std::int32_t> ids;
    ids.reserve(v->size());
    for (const json& t : *v) {
        if (!t.is_number_integer() || t.get<std::int64_t>() < 0 || std::size_t(t.get<std::int64_t>()) >= svc.n_vocab())
            bad_request(key, std::string("'") + key + "' holds " + show(t) + ", not a token id below the vocabulary size " +
                                 std::to_string(svc.n_vocab()) + " (client and server tokenizers differ?)");
        ids.push_back(static_cast<std::int32_t>(t.get<std::int64_t>()));
    }
    if (ids.empty() && !may_be_empty) bad_request(key, std::string("'") + key + "' is empty");
    return ids;
}

// Additive biases; string keys as the client sends them. Ids outside the vocabulary are
// ignored, as LMQL's reference server does (its masks can be longer than a model's vocab).
template <class Service>
std::vector<sample::token_bias> read_bias(Service& svc, const fields& f) {
    std::vector<sample::token_bias> out;
    const json* v = f.object("logit_bias");
    if (!v) return out;
    out.reserve(v->size());
    for (const auto& [k, b] : v->items()) {
        char* end = nullptr;
        const long long id = std::strtoll(k.c_str(), &end, 10);
        if (k.empty() || *end != '\0') bad_request("logit_bias", "'logit_bias' keys must be token ids, got \"" + k + "\"");
        if (!b.is_number()) bad_request("logit_bias", "'logit_bias' values must be numbers, got " + show(b));
        if (id < 0 || std::size_t(id) >= svc.n_vocab()) continue;
        const double x = b.template get<double>();
        out.push_back({static_cast<std::int32_t>(id), std::isfinite(x) ? static_cast<float>(std::clamp(x, -1e6, 1e6))
                                                                        : (x > 0 ? 1e6f : -std::numeric_limits<float>::infinity())});
    }
    return out;
}

template <class Service>
request read_generate(Service& svc, const json& p) {
    const fields f(p);
    request rq = svc.new_request();
    rq.prompt = read_ids(svc, f, "prompt");
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
    s.logit_bias = read_bias(svc, f);
    rq.top_logprobs = f.bounded("top_logprobs", 0, 100).value_or(1);
    if (const std::string why = context_fit_error(rq.prompt.size(), std::size_t(max_tokens), svc.eng().n_ctx()); !why.empty())
        throw http_error(400, why);
    return rq;
}

template <class Service>
request read_score(Service& svc, const json& p) {
    const fields f(p);
    request rq = svc.new_request();
    rq.sampling = sampling_params{};
    rq.prompt = read_ids(svc, f, "prompt", /*may_be_empty=*/true);
    const std::vector<std::int32_t> scored = read_ids(svc, f, "scored");
    rq.prompt.insert(rq.prompt.end(), scored.begin(), scored.end());
    rq.n_scored = scored.size();
    rq.sampling.logit_bias = read_bias(svc, f);
    rq.top_logprobs = 0;
    if (const std::string why = context_fit_error(rq.prompt.size(), 0, svc.eng().n_ctx()); !why.empty())
        throw http_error(400, "prompt and scored tokens: " + why);
    return rq;
}

// One LMTP text message, decoded: what session::handle acts on. Pure (no socket, no admission to
// the engine), so that tests/fuzz/lmtp_message.cpp can feed it arbitrary text.
struct command {
    std::string name;             // the word before the first space
    std::int64_t stream_id = -1;  // -1: none readable
    std::string error;            // not empty: the message is refused with this reason
    request rq;                   // GENERATE and SCORE, when there is no error
    bool known() const noexcept { return name == "GENERATE" || name == "SCORE" || name == "MODEL_INFO"; }
};

template <class Service>
command decode(Service& svc, std::string_view text) {
    command c;
    const std::size_t sp = text.find(' ');
    c.name = std::string(text.substr(0, sp));
    std::string bad_json;
    json payload;
    if (sp != std::string_view::npos) {
        auto parsed = core::try_parse_json(text.substr(sp + 1), core::max_request_json_depth, &bad_json);
        payload = parsed ? std::move(*parsed) : json(json::value_t::discarded);
    }
    if (payload.is_object()) {
        if (auto it = payload.find("stream_id"); it != payload.end() && it->is_number_integer()) c.stream_id = it->get<std::int64_t>();
    }
    if (!c.known()) return c;
    if (!bad_json.empty()) c.error = c.name + ": the message is " + bad_json;
    else if (!payload.is_object()) c.error = c.name + " needs a JSON object after the command";
    else if (c.stream_id < 0) c.error = "'stream_id' must be a non-negative integer";
    else if (c.name != "MODEL_INFO") {
        try {
            c.rq = c.name == "GENERATE" ? read_generate(svc, payload) : read_score(svc, payload);
        } catch (const http_error& e) {
            c.error = e.what();
        }
    }
    return c;
}

template <class Service>
class session {
public:
    session(Service& svc, ws_channel& conn, const std::atomic<bool>& server_stopping)
        : svc_(svc), conn_(conn), server_stopping_(server_stopping) {}
    session(const session&) = delete;
    session& operator=(const session&) = delete;
    ~session() { join_all(); }

    // Serves the socket until the client closes it or the server stops; then cancels and
    // waits for this socket's streams.
    void run() {
        while (auto m = conn_.receive(&server_stopping_)) {
            reap();
            if (!m->text) continue;  // LMTP is text only; binary messages are ignored
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
        command c = decode(svc_, text);
        const std::string& cmd = c.name;
        const std::int64_t sid = c.stream_id;
        if (!c.known()) {
            send_msg(json{{"stream_id", sid}, {"error", "Unknown command: " + cmd}});
            return;
        }
        const bool stream_cmd = cmd != "MODEL_INFO";
        auto refuse = [&](const std::string& why) {
            log(cmd, sid, "error: " + why);
            if (stream_cmd) send_tokens(json::array({json{{"stream_id", sid}, {"error", why}}}));
            else send_msg(json{{"stream_id", sid}, {"error", why}});
        };
        if (!c.error.empty()) return refuse(c.error);
        if (cmd == "MODEL_INFO") {
            send_msg(json{{"stream_id", sid}, {"model_info", model_info()}});
            log(cmd, sid, "");
            return;
        }
        request rq = std::move(c.rq);
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
    ws_channel& conn_;
    const std::atomic<bool>& server_stopping_;
    std::atomic<bool> gone_{false};
    // Touched by the session's own thread only (workers just set `done`). A list: a worker's
    // address stays valid while others come and go.
    std::list<worker> workers_;
};

// Serves one WebSocket upgrade request on the socket the transport handed over, on a thread of
// its own: answers the opening handshake, then runs the LMTP session until either side closes.
template <class Service>
void serve_upgrade(Service& svc, const http::request& req, boost::asio::ip::tcp::socket socket,
                   const std::atomic<bool>& stopping) {
    std::optional<ws_channel> conn;
    try {
        conn.emplace(std::move(socket), req);
    } catch (const std::exception& e) {
        if (svc.options().log_requests) std::fprintf(stderr, "lmtk: LMTP upgrade from %s refused: %s\n", req.remote.c_str(), e.what());
        return;
    }
    if (svc.options().log_requests) std::fprintf(stderr, "lmtk: LMTP session from %s\n", req.remote.c_str());
    session<Service> s(svc, *conn, stopping);
    s.run();
}

}  // namespace lmtk::serve::lmtp
