#pragma once
// lmtk::remote_model: a model behind an OpenAI-compatible server (`lmtk serve-model`,
// llama.cpp's llama-server, ...), driven like a local lmtk::pipeline:
//
//   lmtk::remote_model m("http://127.0.0.1:8080", {.sampling = {.temperature = 0.0f}});
//   for (const std::string& piece : m.stream("Once upon a time", {.max_tokens = 64})) std::cout << piece;
//   lmtk::completion c = m.generate("Once upon a time", {.max_tokens = 64, .stop = {"\n"}});
//
// Both satisfy lmtk::text_generator, so one function template serves either.
//
// Every request is a streamed POST /v1/completions (`stream: true`, `stream_options.include_usage`)
// so that text arrives as the server produces it and the usage still comes back. generate() reads
// the SSE events on the calling thread; stream() runs the request on a background thread that
// feeds a small queue, because the client pushes data into a callback and a pull iterator has
// to hand control back to its caller between pieces. Each request opens its own connection, so
// one remote_model may be used from several threads at once, and it copies like a value.
//
// Mapping from generate_options: max_tokens (< 0 sent as -1: "until the context is full"), stop,
// seed and ignore_eos (a llama.cpp extra the lmtk server reads) become request fields;
// temperature and top_p come from remote_sampling (unset: the server's defaults). add_bos and
// parse_special have no OpenAI field and are not sent: the server tokenizes with its own rules
// (lmtk and llama.cpp parse special tokens and add BOS as the model's metadata says).
//
// What a remote completion cannot carry: `tokens` stays empty (the completions API returns text,
// not ids; the count is time.n_eval). finish_reason "length" becomes max_tokens, or
// context_full when fewer than max_tokens were generated; "stop" becomes stop_string when the
// request had stop strings and end_of_text otherwise (the API does not say which of the two
// ended it). `time` is measured at the client: prompt_ms is the wait for the first piece
// (queueing and network included), eval_ms the rest; n_prompt and n_eval are the usage's
// prompt_tokens and completion_tokens.
//
// Errors throw lmtk::error: no connection, an HTTP error status (with the message of the
// OpenAI error object the server sent), an error event inside the stream, or a stream that ends
// before `data: [DONE]`.
//
// Needs Boost (Beast/Asio, header-only) and nlohmann/json: link lmtk::serve.
#include <lmtk/client/http_client.hpp>
#include <lmtk/core/error.hpp>
#include <lmtk/core/json.hpp>
#include <lmtk/generate/pipeline.hpp>
#include <lmtk/generate/piece_iterator.hpp>
#include <lmtk/generate/text_generator.hpp>
#include <lmtk/generate/timings.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace lmtk {

// Sampling fields sent with every request; unset ones are left to the server.
struct remote_sampling {
    std::optional<float> temperature;  // 0: greedy (lmtk and llama.cpp); the servers' default is 0.8
    std::optional<float> top_p;
};

struct remote_options {
    std::string api_key;               // sent as "Authorization: Bearer ..." when not empty
    std::string model;                 // the request's "model" field; omitted when empty (single-model servers ignore it)
    remote_sampling sampling;
    std::chrono::seconds connect_timeout{10};
    // Longest silence between two reads. Generous: a request queued for a busy slot or a long
    // prompt being evaluated sends nothing until its first token.
    std::chrono::seconds read_timeout{600};
};

// A request's usage object (also in completion::time as n_prompt / n_eval).
struct remote_usage {
    std::size_t prompt_tokens = 0;
    std::size_t completion_tokens = 0;
};

namespace detail::remote {

using json = nlohmann::json;

// Where requests go: host and port, and the path of the completions endpoint. Accepts the base
// URL with or without the "/v1" that OpenAI clients are given.
struct endpoint {
    client::url_parts at;
    std::string path;
};

inline endpoint parse_url(const std::string& url) {
    endpoint e;
    e.at = client::parse_http_url(url, "lmtk::remote_model");
    std::string prefix = e.at.prefix;
    if (prefix.size() >= 3 && prefix.compare(prefix.size() - 3, 3, "/v1") == 0) prefix.resize(prefix.size() - 3);
    e.path = prefix + "/v1/completions";
    return e;
}

inline std::string request_body(std::string_view prompt, const generate_options& g, const remote_options& o) {
    json b{{"prompt", std::string(prompt)},
           {"max_tokens", g.max_tokens < 0 ? -1 : g.max_tokens},  // always sent: the API's default is 16
           {"stream", true},
           {"stream_options", {{"include_usage", true}}}};
    if (!o.model.empty()) b["model"] = o.model;
    if (!g.stop.empty()) b["stop"] = g.stop;
    if (g.seed) b["seed"] = *g.seed;
    if (g.ignore_eos) b["ignore_eos"] = true;
    if (o.sampling.temperature) b["temperature"] = *o.sampling.temperature;
    if (o.sampling.top_p) b["top_p"] = *o.sampling.top_p;
    return b.dump();
}

// The message of an OpenAI (or llama.cpp) error object, else the raw text, shortened.
inline std::string error_message(const std::string& body) {
    const json j = core::try_parse_json(body, core::max_request_json_depth).value_or(json());
    if (j.is_object() && j.contains("error")) {
        const json& e = j["error"];
        if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
        if (e.is_string()) return e.get<std::string>();
        return e.dump();
    }
    if (body.empty()) return "(empty body)";
    return body.size() > 500 ? body.substr(0, 500) + "..." : body;
}

inline finish_reason map_finish(const std::string& name, const generate_options& g, const std::optional<remote_usage>& u) {
    if (name == "length") {
        if (g.max_tokens < 0) return finish_reason::context_full;
        if (u && u->completion_tokens < static_cast<std::size_t>(g.max_tokens)) return finish_reason::context_full;
        return finish_reason::max_tokens;
    }
    if (name.empty()) return finish_reason::none;
    return g.stop.empty() ? finish_reason::end_of_text : finish_reason::stop_string;
}

// Splits a byte stream into Server-Sent Events and hands on each event's field and data.
// Data lines of one event are joined with '\n' (SSE rules); "\r\n" line ends are accepted;
// comment lines (":") are skipped. Besides "data", llama.cpp's non-standard "error:" field is
// passed on, so its mid-stream errors are not lost.
class sse_parser {
public:
    template <class OnEvent>
    void feed(std::string_view bytes, OnEvent&& on_event) {
        buf_.append(bytes);
        std::size_t start = 0;
        for (std::size_t nl; (nl = buf_.find('\n', start)) != std::string::npos; start = nl + 1) {
            std::string_view line(buf_.data() + start, nl - start);
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty()) {
                if (has_data_) on_event(std::string_view("data"), std::string_view(data_));
                data_.clear();
                has_data_ = false;
                continue;
            }
            if (line.front() == ':') continue;
            const std::size_t colon = line.find(':');
            const std::string_view field = line.substr(0, colon);
            std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
            if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
            if (field == "data") {
                if (has_data_) data_ += '\n';
                data_.append(value);
                has_data_ = true;
            } else if (field == "error") {
                on_event(field, value);
            }
        }
        buf_.erase(0, start);
    }

private:
    std::string buf_, data_;
    bool has_data_ = false;
};

// The end of one request as the client saw it.
struct outcome {
    std::string finish;                // the last non-null finish_reason
    std::optional<remote_usage> usage;
    double first_ms = 0.0;             // until the first piece of text (or the end, if none)
    double total_ms = 0.0;
};

struct client_config {
    std::string url;                   // as given, for messages
    endpoint where;
    remote_options opt;
};

inline std::unique_ptr<client::http_connection> make_client(const client_config& c) {
    client::client_timeouts t;
    t.connect = c.opt.connect_timeout;
    t.read = c.opt.read_timeout;
    return std::make_unique<client::http_connection>(c.where.at.host, c.where.at.port, t, "lmtk::remote_model");
}

// Runs one streamed request on the calling thread. on_start() once a 200 status has arrived;
// on_piece(std::string_view) for each non-empty piece of text, returning false to stop reading
// (the request is then abandoned and run returns nullopt; so does a cancelled request).
template <class OnStart, class OnPiece>
std::optional<outcome> run(client::http_connection& cli, const client_config& c, const std::string& body, OnStart&& on_start,
                           OnPiece&& on_piece) {
    std::vector<std::pair<std::string, std::string>> headers{{"Content-Type", "application/json"},
                                                             {"Accept", "text/event-stream"}};
    if (!c.opt.api_key.empty()) headers.emplace_back("Authorization", "Bearer " + c.opt.api_key);

    const stopwatch sw;
    outcome out;
    int status = 0;
    std::string error_body;
    bool stopped = false, done = false, any_text = false;
    sse_parser sse;

    auto on_event = [&](std::string_view field, std::string_view data) {
        if (done) return;
        if (field == "data" && data == "[DONE]") {
            done = true;
            return;
        }
        const json j = core::try_parse_json(data, core::max_request_json_depth).value_or(json());
        if (!j.is_object())
            fail("lmtk::remote_model: ", c.url, " sent an event that is not a JSON object: ", std::string(data.substr(0, 200)));
        if (field == "error" || j.contains("error")) fail("lmtk::remote_model: ", c.url, ": ", error_message(std::string(data)));
        if (const auto it = j.find("usage"); it != j.end() && it->is_object()) {
            // A count of another type is the server's mistake, not the caller's: read it as absent.
            auto count = [&](const char* key) {
                const auto v = it->find(key);
                return v != it->end() && v->is_number_unsigned() ? v->get<std::size_t>() : std::size_t{0};
            };
            remote_usage u;
            u.prompt_tokens = count("prompt_tokens");
            u.completion_tokens = count("completion_tokens");
            out.usage = u;
        }
        const auto choices = j.find("choices");
        if (choices == j.end() || !choices->is_array()) return;
        for (const json& ch : *choices) {
            if (!ch.is_object()) continue;
            if (const auto ix = ch.find("index"); ix != ch.end() && *ix != 0) continue;  // n = 1: only choice 0 exists
            if (const auto fr = ch.find("finish_reason"); fr != ch.end() && fr->is_string()) out.finish = fr->get<std::string>();
            const auto text = ch.find("text");
            if (text == ch.end() || !text->is_string() || text->get_ref<const std::string&>().empty()) continue;
            if (!any_text) out.first_ms = sw.ms();
            any_text = true;
            if (!on_piece(std::string_view(text->get_ref<const std::string&>()))) {
                stopped = true;
                return;
            }
        }
    };

    const client::request_end end = cli.request(
        "POST", c.where.path, headers, body,
        [&](int s) {
            status = s;
            if (status == 200) on_start();
        },
        [&](std::string_view bytes) {
            if (status != 200) {
                if (error_body.size() < (1u << 20)) error_body.append(bytes);
                return true;
            }
            sse.feed(bytes, on_event);
            return !stopped;
        });
    if (end != client::request_end::complete || stopped) return std::nullopt;
    if (status != 200) fail("lmtk::remote_model: ", c.url, ": HTTP ", status, ": ", error_message(error_body));
    if (!done) fail("lmtk::remote_model: the stream from ", c.url, " ended before 'data: [DONE]'");
    out.total_ms = sw.ms();
    if (!any_text) out.first_ms = out.total_ms;
    return out;
}

inline timings timings_of(const outcome& o) {
    timings t;
    if (o.usage) {
        t.n_prompt = o.usage->prompt_tokens;
        t.n_eval = o.usage->completion_tokens;
    }
    t.prompt_ms = o.first_ms;
    t.eval_ms = o.total_ms - o.first_ms;
    return t;
}

}  // namespace detail::remote

class remote_model {
public:
    // url: "http://host:port", optionally ending in "/v1" (the base URL OpenAI clients take).
    explicit remote_model(std::string url, remote_options opt = {}) {
        cfg_.where = detail::remote::parse_url(url);
        cfg_.url = std::move(url);
        cfg_.opt = std::move(opt);
        detail::remote::make_client(cfg_);  // fails now on an unusable URL rather than at the first request
    }
    remote_model(const std::string& host, int port, remote_options opt = {})
        : remote_model("http://" + host + ":" + std::to_string(port), std::move(opt)) {}

    const std::string& url() const noexcept { return cfg_.url; }
    const remote_options& options() const noexcept { return cfg_.opt; }
    // Like a pipeline's sampler(): changes apply to requests started later (a running stream
    // keeps the copy it started with). Not to be changed while another thread starts requests.
    remote_sampling& sampling() noexcept { return cfg_.opt.sampling; }

    // A request in progress: next() (or iteration) returns text as the server sends it.
    // Constructing one waits for the response status, so a refused request (no server, a prompt
    // that does not fit, ...) throws from stream() just as a local pipeline's does. Destroying it
    // before the end abandons the request: the connection is closed and the server stops.
    class generation {
    public:
        generation(const detail::remote::client_config& cfg, std::string_view prompt, generate_options opt)
            : w_(std::make_unique<worker>()) {
            w_->cfg = cfg;
            w_->opt = std::move(opt);
            w_->cli = detail::remote::make_client(cfg);
            w_->thread = std::thread([w = w_.get(), body = detail::remote::request_body(prompt, w_->opt, cfg.opt)] {
                w->work(body);
            });
            std::unique_lock lk(w_->m);
            w_->cv.wait(lk, [&] { return w_->started || w_->ended; });
            if (w_->ended && w_->err && w_->q.empty()) {
                const std::exception_ptr e = std::exchange(w_->err, nullptr);
                lk.unlock();
                w_.reset();  // joins the finished thread
                std::rethrow_exception(e);
            }
        }

        // Replaces `out` with the next piece of text; false once the stream has ended and
        // everything has been returned. A failure during the stream throws after the pieces
        // that came before it.
        bool next(std::string& out) {
            out.clear();
            if (!w_) return false;
            std::unique_lock lk(w_->m);
            w_->cv.wait(lk, [&] { return !w_->q.empty() || w_->ended; });
            if (!w_->q.empty()) {
                out = std::move(w_->q.front());
                w_->q.pop_front();
                w_->cv.notify_all();  // room for the reader thread
                return true;
            }
            if (w_->err) std::rethrow_exception(std::exchange(w_->err, nullptr));
            return false;
        }

        // finish(), n_prompt_tokens(), usage() and time() come with the end of the stream (the
        // usage is its last event): until next() has returned false they are none / 0 / empty.
        finish_reason finish() const {
            if (!w_) return finish_reason::none;
            const std::lock_guard lk(w_->m);
            return w_->result ? detail::remote::map_finish(w_->result->finish, w_->opt, w_->result->usage) : finish_reason::none;
        }
        std::size_t n_prompt_tokens() const {
            const auto u = usage();
            return u ? u->prompt_tokens : 0;
        }
        std::optional<remote_usage> usage() const {
            if (!w_) return std::nullopt;
            const std::lock_guard lk(w_->m);
            return w_->result ? w_->result->usage : std::nullopt;
        }
        timings time() const {
            if (!w_) return {};
            const std::lock_guard lk(w_->m);
            return w_->result ? detail::remote::timings_of(*w_->result) : timings{};
        }

        // Input iteration: for (const std::string& piece : generation) ...
        using iterator = piece_iterator<generation>;
        iterator begin() { return iterator(this); }
        std::default_sentinel_t end() const noexcept { return {}; }

    private:
        // Shared by the consumer and the reader thread; owned by the generation (the thread is
        // joined before it goes away). Heap-allocated so that the generation can move.
        struct worker {
            static constexpr std::size_t capacity = 64;  // pieces; a slow reader holds the socket, not memory

            std::mutex m;
            std::condition_variable cv;
            std::deque<std::string> q;
            bool started = false, ended = false, cancelled = false;
            std::exception_ptr err;
            std::optional<detail::remote::outcome> result;
            detail::remote::client_config cfg;  // a copy: the remote_model may change or go away meanwhile
            generate_options opt;
            std::unique_ptr<client::http_connection> cli;
            std::thread thread;

            void work(const std::string& body) {
                const detail::remote::client_config& c = cfg;
                std::optional<detail::remote::outcome> o;
                std::exception_ptr e;
                try {
                    o = detail::remote::run(
                        *cli, c, body,
                        [this] {
                            const std::lock_guard lk(m);
                            started = true;
                            cv.notify_all();
                        },
                        [this](std::string_view piece) {
                            std::unique_lock lk(m);
                            cv.wait(lk, [&] { return q.size() < capacity || cancelled; });
                            if (cancelled) return false;
                            q.emplace_back(piece);
                            cv.notify_all();
                            return true;
                        });
                } catch (...) {
                    e = std::current_exception();
                }
                const std::lock_guard lk(m);
                if (!o && !e && !cancelled) {
                    try {
                        fail("lmtk::remote_model: the request to ", c.url, " was cancelled");
                    } catch (...) {
                        e = std::current_exception();
                    }
                }
                result = std::move(o);
                err = e;
                ended = true;
                cv.notify_all();
            }

            ~worker() {
                {
                    const std::lock_guard lk(m);
                    cancelled = true;
                    cv.notify_all();
                }
                // Ends a read that is waiting for the server at once.
                if (cli) cli->cancel();
                if (thread.joinable()) thread.join();
            }
        };
        std::unique_ptr<worker> w_;
    };

    generation stream(std::string_view prompt, generate_options opt = {}) const { return generation(cfg_, prompt, std::move(opt)); }

    // Runs to the end on the calling thread, calling on_text(std::string_view) for each piece.
    template <class OnText>
    completion generate(std::string_view prompt, generate_options opt, OnText&& on_text) const {
        const auto cli = detail::remote::make_client(cfg_);
        completion c;
        const auto o = detail::remote::run(*cli, cfg_, detail::remote::request_body(prompt, opt, cfg_.opt), [] {},
                                           [&](std::string_view piece) {
                                               c.text += piece;
                                               on_text(piece);
                                               return true;
                                           });
        if (!o) fail("lmtk::remote_model: the request to ", cfg_.url, " was cancelled");
        c.finish = detail::remote::map_finish(o->finish, opt, o->usage);
        c.n_prompt_tokens = o->usage ? o->usage->prompt_tokens : 0;
        c.time = detail::remote::timings_of(*o);
        return c;
    }
    completion generate(std::string_view prompt, generate_options opt = {}) const {
        return generate(prompt, std::move(opt), [](std::string_view) {});
    }

private:
    detail::remote::client_config cfg_;
};

static_assert(text_generator<remote_model>);

}  // namespace lmtk
