// lmtk serve-model: one model behind the OpenAI, Ollama and llama.cpp HTTP APIs.
//
// Fixed flags are parsed here; every other `--name value` pair is model configuration, as in
// `lmql serve-model` (values coerced like LMQL does: True/False -> bool, then int, then float,
// else string), checked against the names below so that a typo fails at start-up with the list
// of valid names instead of being silently ignored.
#include "commands.hpp"
#include "common.hpp"

#include <lmtk/serve/server.hpp>

#include <charconv>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <variant>

namespace lmtk::cli {

namespace {

using config_value = std::variant<bool, long long, double, std::string>;

config_value coerce(const std::string& v) {
    if (v == "True" || v == "true") return true;
    if (v == "False" || v == "false") return false;
    long long i = 0;
    if (auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), i); ec == std::errc() && p == v.data() + v.size())
        return i;
    double d = 0;
    if (auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d); ec == std::errc() && p == v.data() + v.size())
        return d;
    return v;
}

enum class kind { boolean, integer, real, text };
struct config_key {
    const char* name;
    kind type;
    const char* help;
};
constexpr config_key config_keys[] = {
    {"n_ctx", kind::integer, "context size per slot (same as -c)"},
    {"n_threads", kind::integer, "threads of the forward pass (same as -t)"},
    {"n_batch", kind::integer, "tokens per forward pass during prompt processing"},
    {"kv_type", kind::text, "KV cache element type: f32 or f16"},
    {"seed", kind::integer, "seed of the slots' generators"},
    {"temperature", kind::real, "default temperature (0: greedy)"},
    {"top_k", kind::integer, "default top-k (0: off)"},
    {"top_p", kind::real, "default top-p"},
    {"min_p", kind::real, "default min-p"},
    {"repeat_penalty", kind::real, "default repetition penalty"},
    {"repeat_last_n", kind::integer, "default repetition window"},
    {"n_predict", kind::integer, "default token limit (-1: until the context is full)"},
    {"max_queue", kind::integer, "requests that may wait for a slot before 503"},
};

std::string valid_names() {
    std::string s;
    for (const auto& k : config_keys) s += std::string(s.empty() ? "" : ", ") + "--" + k.name;
    return s;
}

// The configuration as name -> value, each checked against its declared kind.
std::map<std::string, config_value> read_config(const std::vector<std::pair<std::string, std::string>>& pairs) {
    std::map<std::string, config_value> out;
    for (auto [name, raw] : pairs) {
        for (char& c : name)
            if (c == '-') c = '_';
        const config_key* key = nullptr;
        for (const auto& k : config_keys)
            if (name == k.name) key = &k;
        if (!key) fail("lmtk serve-model: unknown model configuration '--", name, "'; valid names: ", valid_names());
        config_value v = coerce(raw);
        const bool ok = key->type == kind::text ||
                        (key->type == kind::boolean && std::holds_alternative<bool>(v)) ||
                        (key->type == kind::integer && std::holds_alternative<long long>(v)) ||
                        (key->type == kind::real && (std::holds_alternative<double>(v) || std::holds_alternative<long long>(v)));
        if (!ok)
            fail("lmtk serve-model: --", name, " expects ",
                 key->type == kind::integer ? "an integer" : key->type == kind::real ? "a number" : "True or False",
                 ", got '", raw, "'");
        if (key->type == kind::text) v = raw;
        if (key->type == kind::real && std::holds_alternative<long long>(v)) v = double(std::get<long long>(v));
        out[name] = v;
    }
    return out;
}

template <class KV>
int serve_with(const args& a, const std::string& path, std::map<std::string, config_value> cfg) {
    auto integer = [&](const char* name, long long fallback) {
        const auto it = cfg.find(name);
        return it == cfg.end() ? fallback : std::get<long long>(it->second);
    };
    auto real = [&](const char* name, double fallback) {
        const auto it = cfg.find(name);
        return it == cfg.end() ? fallback : std::get<double>(it->second);
    };

    serve::engine_options eo;
    eo.n_slots = a.number<std::size_t>("--parallel", 1);
    if (eo.n_slots == 0 || eo.n_slots > 256) fail("lmtk serve-model: --parallel must be between 1 and 256");
    eo.max_queue = static_cast<std::size_t>(std::max(0LL, integer("max_queue", a.number<long long>("--max-queue", 32))));
    const std::size_t hw = std::max(1u, std::thread::hardware_concurrency());
    eo.context.n_threads = static_cast<std::size_t>(integer("n_threads", a.number<long long>("-t", 0)));
    if (eo.context.n_threads == 0) eo.context.n_threads = hw;  // one pool serves every slot's rows
    eo.context.n_ctx = static_cast<std::size_t>(integer("n_ctx", a.number<long long>("-c", 0)));
    eo.context.n_batch = static_cast<std::size_t>(integer("n_batch", static_cast<long long>(model::context_options{}.n_batch)));
    eo.seed = static_cast<std::uint64_t>(integer("seed", static_cast<long long>(std::random_device{}())));

    serve::server_options so;
    so.host = a.get("--host").value_or("127.0.0.1");
    so.port = a.number<int>("--port", 8080);
    if (so.port < 0 || so.port > 65535) fail("lmtk serve-model: --port must be between 0 and 65535");
    so.alias = a.get("--alias").value_or("");
    if (const auto f = a.get("--chat-template-file")) {  // Jinja source used instead of the model's
        std::ifstream in(*f, std::ios::binary);
        if (!in) fail("lmtk serve-model: cannot open --chat-template-file ", *f);
        so.chat_template.assign(std::istreambuf_iterator<char>(in), {});
        if (so.chat_template.empty()) fail("lmtk serve-model: --chat-template-file ", *f, " is empty");
    }
    so.api_key = a.get("--api-key").value_or("");
    so.defaults.temperature = static_cast<float>(real("temperature", 0.8));
    so.defaults.top_k = static_cast<std::int32_t>(integer("top_k", 40));
    so.defaults.top_p = static_cast<float>(real("top_p", 0.95));
    so.defaults.min_p = static_cast<float>(real("min_p", 0.05));
    so.defaults.repeat_penalty = static_cast<float>(real("repeat_penalty", 1.0));
    so.defaults.repeat_last_n = static_cast<std::int32_t>(integer("repeat_last_n", 64));
    so.default_max_tokens = static_cast<int>(integer("n_predict", -1));
    // Transport limits (README: "Limits"); past one a request gets 4xx naming it.
    so.transport.max_body_bytes = a.number<std::size_t>("--max-body", so.transport.max_body_bytes);
    so.transport.max_header_bytes = a.number<std::size_t>("--max-header", so.transport.max_header_bytes);
    so.transport.max_connections = a.number<std::size_t>("--max-connections", so.transport.max_connections);
    so.transport.max_upgrades = a.number<std::size_t>("--max-lmtp-sessions", so.transport.max_upgrades);
    so.transport.body_timeout = std::chrono::milliseconds(
        static_cast<long long>(1000 * a.number<double>("--read-timeout", double(so.transport.body_timeout.count()) / 1000)));
    if (so.transport.max_body_bytes < 1024 || so.transport.max_header_bytes < 1024)
        fail("lmtk serve-model: --max-body and --max-header must be at least 1024 bytes");
    if (so.transport.max_connections == 0 || so.transport.body_timeout.count() <= 0)
        fail("lmtk serve-model: --max-connections and --read-timeout must be positive");

    const stopwatch load;
    cli_model m(path, load_options_from(a));
    const auto tok = tokenize::load_tokenizer(m.source());
    if (tok.size() != m.n_vocab())
        fail(path, ": the tokenizer has ", tok.size(), " tokens but the model's vocabulary has ", m.n_vocab());
    serve::engine<cli_model, KV> eng(m, tok, eo);
    so.load_ms = load.ms();
    serve::server<cli_model, KV> srv(eng, so);
    const int port = srv.bind();

    const std::string base = "http://" + so.host + ":" + std::to_string(port);
    std::fprintf(stderr,
                 "lmtk: serving %s as '%s': %zu slot(s) x %zu tokens batched in one pass, %zu thread(s), queue %zu, kv %.*s, chat template: %s\n",
                 path.c_str(), srv.svc().model_id().c_str(), eng.n_slots(), eng.n_ctx(), eng.n_threads(),
                 eo.max_queue, int(KV::name.size()), KV::name.data(), srv.svc().template_kind().c_str());
    std::fprintf(stderr,
                 "lmtk: OpenAI    %s/v1  (GET /v1/models, POST /v1/chat/completions, POST /v1/completions)\n"
                 "lmtk: Ollama    %s     (GET /api/tags, POST /api/show, /api/generate, /api/chat)\n"
                 "lmtk: llama.cpp %s     (GET /health, /props, POST /tokenize, /detokenize, /completion)\n"
                 "lmtk: LMTP      ws://%s:%d/  (LMQL: GENERATE, SCORE, MODEL_INFO over a WebSocket on GET /)\n",
                 base.c_str(), base.c_str(), base.c_str(), so.host.c_str(), port);
    std::fflush(stderr);
    srv.listen();
    return 0;
}

}  // namespace

int cmd_serve(const argv_t& argv) {
#if defined(__GLIBC__)
    // glibc gives every thread that allocates under contention an arena of its own and keeps
    // each arena's high-water mark, and once a large block was unmapped it serves blocks of that
    // size from the heap: a request body of 10 MB parsed on each worker then left ~75 MB of RSS
    // per worker for good. Two arenas, and large blocks always mapped (returned when freed),
    // keep a long-running server at its working size (bench/serve_memory.py, release build,
    // Intel Xeon with AVX-512, 2 cores: 180 MB without these two calls, 22 MB with them, after
    // 32 bodies of 10 MB on 4 workers).
    ::mallopt(M_ARENA_MAX, 2);
    ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
    // Split fixed flags from model configuration pairs before the shared parser sees them.
    static const std::vector<std::string> with_value = {"-m|--model", "--host",   "--port",      "-c|--ctx-size",
                                                        "--parallel|-np", "-t|--threads", "--alias", "--chat-template-file", "--api-key",
                                                        "--max-queue", "--kv-type", "--max-body", "--max-header",
                                                        "--max-connections", "--max-lmtp-sessions", "--read-timeout", "--cpu"};
    auto known = [&](const std::string& s) {
        for (const auto& spec : with_value) {
            std::size_t start = 0;
            for (;;) {
                const std::size_t bar = spec.find('|', start);
                if (spec.compare(start, bar == std::string::npos ? std::string::npos : bar - start, s) == 0) return true;
                if (bar == std::string::npos) break;
                start = bar + 1;
            }
        }
        return false;
    };
    argv_t fixed;
    std::vector<std::pair<std::string, std::string>> extra;
    for (std::size_t i = 0; i < argv.size(); ++i) {
        const std::string& s = argv[i];
        if (s.rfind("--", 0) == 0 && s.size() > 2 && !known(s)) {
            if (i + 1 >= argv.size()) fail("lmtk serve-model: '", s, "' needs a value");
            extra.emplace_back(s.substr(2), argv[++i]);
            continue;
        }
        fixed.push_back(s);
        if (known(s) && i + 1 < argv.size()) fixed.push_back(argv[++i]);
    }
    const args a("serve-model", fixed, with_value);
    auto cfg = read_config(extra);
    std::string path = a.get("-m").value_or("");
    if (path.empty() && !a.positional().empty()) path = a.positional().front();
    if (path.empty()) fail("lmtk serve-model: missing MODEL (lmtk serve-model MODEL [--port N] ...)");
    if (a.positional().size() > 1) fail("lmtk serve-model: unexpected argument '", a.positional()[1], "'");

    std::string kv = a.get("--kv-type").value_or("f32");
    if (const auto it = cfg.find("kv_type"); it != cfg.end()) kv = std::get<std::string>(it->second);
    if (kv == "f32") return serve_with<model::kv_f32>(a, path, cfg);
    if (kv == "f16") return serve_with<model::kv_f16>(a, path, cfg);
    fail("lmtk serve-model: kv_type must be f32 or f16, not '", kv, "'");
}

}  // namespace lmtk::cli
