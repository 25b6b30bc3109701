#pragma once
// lmtk::remote_lmtp_model: a model behind an LMTP endpoint (`lmtk serve-model`, or LMQL's own
// `lmql serve-model`), driven like a local lmtk::pipeline:
//
//   auto tok = lmtk::tokenize::load_tokenizer("tinystories-656k");   // the served model's tokenizer
//   lmtk::remote_lmtp_model m("127.0.0.1:8080", tok);
//   for (const std::string& piece : m.stream("Once upon a time", {.max_tokens = 64})) std::cout << piece;
//   lmtk::completion c = m.generate("Once upon a time", {.max_tokens = 64, .stop = {"\n"}});
//   std::vector<float> lp = m.score(tok.encode("Once upon", true), tok.encode(" a time", false));
//
// LMTP carries token ids, never text, so the client tokenizes and detokenizes with the model's
// own tokenizer (a GGUF file, even a vocabulary-only one, or a Hugging Face folder). In exchange
// a completion's `tokens` are the real generated ids, which the OpenAI-based remote_model cannot
// give, and scoring (log P of given tokens) is available.
//
// Each request opens its own WebSocket (one LMTP stream on it), so one object may be used from
// several threads at once and it copies like a value. stream() reads frames on the calling
// thread, between next() calls; it first waits for the first token, so a refused request (no
// server, a prompt that does not fit) throws from stream() as a local pipeline's does.
// Destroying a generation before its end closes the socket, and the server stops generating.
//
// Mapping from generate_options: the prompt is encoded with add_bos (default: the vocabulary's
// own rule) and parse_special; max_tokens < 0 asks the server's context size (MODEL_INFO, which
// lmtk reports) and generates until it is full; seed is sent; ignore_eos becomes a logit_bias
// of -1e30 on the end token (LMTP has no such flag, and lmtk's server reads that bias as a ban).
// Stop strings are applied here, on the decoded text, and end the stream early. temperature
// (default 0: greedy, LMQL's argmax) and top_p come from remote_lmtp_options.
//
// finish: the end token -> end_of_text (it is not part of text or tokens); "length" ->
// max_tokens, or context_full when max_tokens was < 0; a stop string -> stop_string.
// time: n_prompt and n_eval are exact token counts; prompt_ms is the wait for the first token
// (connection, queueing and prefill), eval_ms the rest.
//
// Errors throw lmtk::error: no connection, a refused upgrade, an error the server reports for
// the stream (its message), a closed or silent socket.
#include <lmtk/core/error.hpp>
#include <lmtk/generate/pipeline.hpp>
#include <lmtk/generate/piece_iterator.hpp>
#include <lmtk/generate/text_generator.hpp>
#include <lmtk/generate/text_stream.hpp>
#include <lmtk/generate/timings.hpp>
#include <lmtk/client/ws_client.hpp>
#include <lmtk/core/json.hpp>
#include <lmtk/tokenize/tokenize.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk {

struct remote_lmtp_options {
    float temperature = 0.0f;          // 0: argmax
    std::optional<float> top_p;
    std::string model = "lmtk";        // the messages' "model" field (a single-model server ignores it)
    std::chrono::milliseconds connect_timeout{10000};
    // Longest silence between two frames: a request queued for a busy slot or a long prompt
    // being evaluated sends nothing until its first token.
    std::chrono::milliseconds read_timeout{600000};
};

namespace detail::lmtp_client {

using json = nlohmann::json;

struct endpoint {
    std::string host;
    int port = 0;
    std::string path = "/";
};

// "host:port", "ws://host:port/", "http://host:port" (LMQL's endpoint strings take all three).
inline endpoint parse_endpoint(std::string s) {
    for (const char* scheme : {"ws://", "http://"})
        if (s.rfind(scheme, 0) == 0) s.erase(0, std::char_traits<char>::length(scheme));
    if (s.rfind("wss://", 0) == 0 || s.rfind("https://", 0) == 0) fail("lmtk::remote_lmtp_model: TLS endpoints are not supported: ", s);
    endpoint e;
    if (const std::size_t slash = s.find('/'); slash != std::string::npos) {
        e.path = s.substr(slash);
        s.resize(slash);
    }
    const std::size_t colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) fail("lmtk::remote_lmtp_model: '", s, "' is not host:port");
    e.host = s.substr(0, colon);
    if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') e.host = e.host.substr(1, e.host.size() - 2);
    std::size_t used = 0;
    try {
        e.port = std::stoi(s.substr(colon + 1), &used);
    } catch (...) {
        used = 0;
    }
    if (used == 0 || used != s.size() - colon - 1 || e.port <= 0 || e.port > 65535)
        fail("lmtk::remote_lmtp_model: bad port in '", s, "'");
    return e;
}

struct config {
    std::string where;                 // as given, for messages
    endpoint ep;
    remote_lmtp_options opt;
    std::shared_ptr<const tokenize::tokenizer> tok;
};

// One LMTP stream on its own socket.
class channel {
public:
    explicit channel(const config& c) : c_(c) {
        try {
            conn_ = std::make_unique<client::ws_connection>(c.ep.host, std::to_string(c.ep.port), c.ep.path, c.opt.connect_timeout);
        } catch (const error& e) {
            fail("lmtk::remote_lmtp_model: ", e.what());
        }
    }

    void send(std::string_view cmd, const json& payload) {
        if (!conn_->send_text(std::string(cmd) + " " + payload.dump(-1, ' ', false, json::error_handler_t::replace)))
            fail("lmtk::remote_lmtp_model: sending to ", c_.where, " failed (connection closed)");
    }

    // The next item of a TOKEN or MSG frame for `stream_id` (others are ignored). Throws on a
    // stream error, a closed socket or silence beyond read_timeout.
    std::pair<std::string, json> next_item(std::int64_t stream_id) {
        for (;;) {
            while (!items_.empty()) {
                auto it = std::move(items_.front());
                items_.pop_front();
                const json& j = it.second;
                if (!j.is_object() || j.value("stream_id", std::int64_t(-2)) != stream_id) continue;
                if (const auto e = j.find("error"); e != j.end())
                    fail("lmtk::remote_lmtp_model: ", c_.where, ": ", e->is_string() ? e->get<std::string>() : e->dump());
                return it;
            }
            auto m = conn_->receive(c_.opt.read_timeout);
            if (!m) {
                if (conn_->timed_out())
                    fail("lmtk::remote_lmtp_model: ", c_.where, " sent nothing for ", c_.opt.read_timeout.count(), " ms");
                fail("lmtk::remote_lmtp_model: ", c_.where, " closed the connection before the stream ended");
            }
            const std::size_t sp = m->find(' ');
            const std::string cmd = m->substr(0, sp);
            json items = sp == std::string::npos
                             ? json()
                             : core::try_parse_json(std::string_view(*m).substr(sp + 1), core::max_request_json_depth).value_or(json());
            if (!items.is_array()) fail("lmtk::remote_lmtp_model: ", c_.where, " sent a malformed frame: ", m->substr(0, 200));
            for (json& j : items) items_.emplace_back(cmd, std::move(j));
        }
    }

    void close() { conn_->close(1000); }

private:
    const config& c_;
    std::unique_ptr<client::ws_connection> conn_;
    std::deque<std::pair<std::string, json>> items_;
};

}  // namespace detail::lmtp_client

class remote_lmtp_model {
public:
    // endpoint: "host:port" (as LMQL's `endpoint=`), "ws://host:port/" or "http://host:port".
    // tok: the served model's tokenizer.
    remote_lmtp_model(const std::string& endpoint, tokenize::tokenizer tok, remote_lmtp_options opt = {}) {
        cfg_.where = endpoint;
        cfg_.ep = detail::lmtp_client::parse_endpoint(endpoint);
        cfg_.opt = std::move(opt);
        cfg_.tok = std::make_shared<const tokenize::tokenizer>(std::move(tok));
    }

    const std::string& endpoint() const noexcept { return cfg_.where; }
    const tokenize::tokenizer& tokenizer() const noexcept { return *cfg_.tok; }
    // Applies to requests started later. Not to be changed while another thread starts requests.
    remote_lmtp_options& options() noexcept { return cfg_.opt; }

    class generation {
    public:
        generation(const detail::lmtp_client::config& cfg, std::string_view prompt, generate_options opt)
            : s_(std::make_unique<state>(cfg, std::move(opt))) {
            state& s = *s_;
            const auto& tok = *cfg.tok;
            const auto ids = tok.encode(prompt, s.opt.add_bos.value_or(tok.vocabulary().add_bos()), s.opt.parse_special);
            s.n_prompt = ids.size();
            int max_tokens = s.opt.max_tokens;
            if (max_tokens < 0) {
                s.ch.send("MODEL_INFO", {{"stream_id", 1}, {"model", cfg.opt.model}, {"data", {{"model", cfg.opt.model}}}});
                const auto [cmd, item] = s.ch.next_item(1);
                const auto info = item.find("model_info");
                if (info == item.end() || !info->is_object() || !info->contains("n_ctx") || !(*info)["n_ctx"].is_number_integer())
                    fail("lmtk::remote_lmtp_model: ", cfg.where, " does not report its context size; give max_tokens >= 0");
                const auto n_ctx = (*info)["n_ctx"].get<std::int64_t>();
                max_tokens = static_cast<int>(std::max<std::int64_t>(n_ctx - std::int64_t(ids.size()), 1));
            }
            if (max_tokens == 0) {
                s.ended = true;
                s.finish = finish_reason::max_tokens;
                return;
            }
            nlohmann::json g{{"model", cfg.opt.model}, {"prompt", ids},  {"stream_id", 2},
                             {"max_tokens", max_tokens}, {"temperature", cfg.opt.temperature}, {"top_logprobs", 1}};
            if (cfg.opt.top_p) g["top_p"] = *cfg.opt.top_p;
            if (s.opt.seed) g["seed"] = *s.opt.seed;
            if (s.opt.ignore_eos && tok.vocabulary().eos() >= 0)
                g["logit_bias"] = {{std::to_string(tok.vocabulary().eos()), -1e30}};
            s.ch.send("GENERATE", g);
            // Wait for the first token: a refused request throws from stream().
            s.pull();
        }

        // Replaces `out` with the next piece of text; false once the stream has ended and
        // everything has been returned.
        bool next(std::string& out) {
            out.clear();
            if (!s_) return false;
            while (s_->ready.empty() && !s_->ended) s_->pull();
            if (s_->ready.empty()) return false;
            out = std::move(s_->ready.front());
            s_->ready.pop_front();
            return true;
        }

        // Known once next() has returned false.
        finish_reason finish() const { return s_ ? s_->finish : finish_reason::none; }
        std::size_t n_prompt_tokens() const { return s_ ? s_->n_prompt : 0; }
        const std::vector<std::int32_t>& tokens() const { return s_->tokens; }
        timings time() const {
            timings t;
            if (!s_) return t;
            t.n_prompt = s_->n_prompt;
            t.n_eval = s_->tokens.size();
            t.prompt_ms = s_->first_ms;
            t.eval_ms = s_->total_ms - s_->first_ms;
            return t;
        }

        // Input iteration: for (const std::string& piece : generation) ...
        using iterator = piece_iterator<generation>;
        iterator begin() { return iterator(this); }
        std::default_sentinel_t end() const noexcept { return {}; }

    private:
        struct state {
            state(const detail::lmtp_client::config& c, generate_options o)
                : cfg(c), opt(std::move(o)), ch(cfg), text(opt.stop) {}
            detail::lmtp_client::config cfg;  // a copy: the model object may change or go away
            generate_options opt;
            detail::lmtp_client::channel ch;
            text_stream text;
            std::deque<std::string> ready;
            std::vector<std::int32_t> tokens;
            std::size_t n_prompt = 0;
            bool ended = false;
            finish_reason finish = finish_reason::none;
            stopwatch sw;
            double first_ms = 0.0, total_ms = 0.0;

            // Reads one TOKEN item and turns it into text.
            void pull() {
                const auto [cmd, item] = ch.next_item(2);
                if (cmd != "TOKEN") return;
                if (!item.contains("token") || !item["token"].is_number_integer())
                    fail("lmtk::remote_lmtp_model: ", cfg.where, " sent a token item without a token: ", item.dump());
                if (tokens.empty() && first_ms == 0.0) first_ms = sw.ms();
                const auto id = static_cast<std::int32_t>(item["token"].get<std::int64_t>());
                const auto fr = item.find("finish_reason");
                const std::string why = fr != item.end() && fr->is_string() ? fr->get<std::string>() : std::string();
                const auto& tok = *cfg.tok;
                const bool end_token = why == "stop" && tok.is_eog(id);
                std::string out;
                if (!end_token) {
                    if (id < 0 || static_cast<std::size_t>(id) >= tok.size())
                        fail("lmtk::remote_lmtp_model: ", cfg.where, " sent token ", id, ", outside the tokenizer's ", tok.size());
                    tokens.push_back(id);
                    if (text.push(tok.piece(id), out)) {
                        end(finish_reason::stop_string, std::move(out));
                        ch.close();  // the server notices and stops generating
                        return;
                    }
                }
                if (why.empty()) {
                    if (!out.empty()) ready.push_back(std::move(out));
                    return;
                }
                finish_reason f = finish_reason::end_of_text;
                if (why == "length") f = opt.max_tokens < 0 ? finish_reason::context_full : finish_reason::max_tokens;
                end(f, std::move(out));
                ch.close();
            }

            void end(finish_reason f, std::string out) {
                text.flush(out);
                if (!out.empty()) ready.push_back(std::move(out));
                finish = f;
                ended = true;
                total_ms = sw.ms();
                if (first_ms == 0.0) first_ms = total_ms;
            }
        };
        std::unique_ptr<state> s_;
    };

    generation stream(std::string_view prompt, generate_options opt = {}) const { return generation(cfg_, prompt, std::move(opt)); }

    template <class OnText>
    completion generate(std::string_view prompt, generate_options opt, OnText&& on_text) const {
        generation g(cfg_, prompt, std::move(opt));
        completion c;
        c.text = read_all(g, on_text);
        c.tokens = g.tokens();
        c.finish = g.finish();
        c.n_prompt_tokens = g.n_prompt_tokens();
        c.time = g.time();
        return c;
    }
    completion generate(std::string_view prompt, generate_options opt = {}) const {
        return generate(prompt, std::move(opt), [](std::string_view) {});
    }

    // log P(scored[i] | prompt, scored[..i]) for each scored token (LMTP's SCORE). An empty
    // prompt leaves scored[0] unconditioned: 0.
    std::vector<float> score(std::span<const std::int32_t> prompt, std::span<const std::int32_t> scored) const {
        if (scored.empty()) return {};
        detail::lmtp_client::channel ch(cfg_);
        ch.send("SCORE", {{"model", cfg_.opt.model},
                          {"prompt", std::vector<std::int32_t>(prompt.begin(), prompt.end())},
                          {"scored", std::vector<std::int32_t>(scored.begin(), scored.end())},
                          {"stream_id", 1}});
        std::vector<float> out;
        while (out.size() < scored.size()) {
            const auto [cmd, item] = ch.next_item(1);
            if (cmd != "TOKEN") continue;
            if (!item.contains("logprob") || !item["logprob"].is_number())
                fail("lmtk::remote_lmtp_model: ", cfg_.where, " sent a score without a logprob: ", item.dump());
            out.push_back(item["logprob"].get<float>());
        }
        ch.close();
        return out;
    }

private:
    detail::lmtp_client::config cfg_;
};

static_assert(text_generator<remote_lmtp_model>);

}  // namespace lmtk
