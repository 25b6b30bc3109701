#pragma once
// lmtk::tokenize::vocab: the token table of a model, as GGUF stores it under tokenizer.ggml.*.
//
// It owns copies of the token texts, so it outlives the gguf::file it came from. Every array is
// checked against the token count and every special id against the range at load: a tokenizer
// built on a vocab never sees an id it cannot index.
#include <lmtk/core/error.hpp>
#include <lmtk/io/gguf.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

// GGUF token types (llama.cpp's llama_token_type). Stored ids: never renumber.
enum class token_type : std::uint8_t {
    undefined = 0,
    normal = 1,
    unknown = 2,
    control = 3,
    user_defined = 4,
    unused = 5,
    byte = 6,
};

inline constexpr std::int32_t no_token = -1;  // a special id the vocabulary does not have

// Everything a vocab is made of. from_gguf fills one from metadata; other loaders (llama2.c's
// tokenizer.bin, tests) can fill one by hand. `vocab` validates it.
struct vocab_spec {
    std::string model;                  // tokenizer.ggml.model: "llama" (SPM), "gpt2" (BPE), ...
    std::string pre;                    // tokenizer.ggml.pre: BPE pre-tokenizer name, may be empty
    // tokenizer.json's split patterns (none: no split); when set, used instead of `pre`.
    std::optional<std::vector<std::string>> pre_patterns;
    bool ignore_merges = false;  // with pre_patterns: a piece that is a token is taken whole
    std::vector<std::string> tokens;
    std::vector<float> scores;          // empty: all 0
    std::vector<token_type> types;      // empty: all normal
    std::vector<std::string> merges;    // BPE merges "a b", empty for SPM
    std::int32_t bos = no_token, eos = no_token, unk = no_token, sep = no_token, pad = no_token;
    std::int32_t eot = no_token, eom = no_token;  // end of turn / end of message (chat models)
    bool add_bos = false, add_eos = false, add_space_prefix = false;
};

class vocab {
public:
    vocab() = default;

    // `origin` names the source (a path) in error messages.
    vocab(vocab_spec spec, std::string_view origin) : s_(std::move(spec)) {
        const std::size_t n = s_.tokens.size();
        if (n == 0) fail(origin, ": the vocabulary has no tokens");
        if (n > static_cast<std::size_t>(INT32_MAX)) fail(origin, ": the vocabulary has too many tokens (", n, ")");
        if (s_.scores.empty()) s_.scores.assign(n, 0.0f);
        if (s_.types.empty()) s_.types.assign(n, token_type::normal);
        if (s_.scores.size() != n)
            fail(origin, ": tokenizer.ggml.scores has ", s_.scores.size(), " entries for ", n, " tokens");
        if (s_.types.size() != n)
            fail(origin, ": tokenizer.ggml.token_type has ", s_.types.size(), " entries for ", n, " tokens");
        for (std::size_t i = 0; i < n; ++i)
            if (static_cast<std::uint8_t>(s_.types[i]) > static_cast<std::uint8_t>(token_type::byte))
                fail(origin, ": token ", i, " has unknown token type ", int(static_cast<std::uint8_t>(s_.types[i])));
        const std::pair<const char*, std::int32_t> ids[] = {{"bos", s_.bos}, {"eos", s_.eos}, {"unknown", s_.unk},
                                                            {"seperator", s_.sep}, {"padding", s_.pad},
                                                            {"eot", s_.eot}, {"eom", s_.eom}};
        for (const auto& [name, id] : ids)
            if (id != no_token && (id < 0 || static_cast<std::size_t>(id) >= n))
                fail(origin, ": tokenizer.ggml.", name, "_token_id ", id, " is outside the vocabulary of ", n, " tokens");
        index_.reserve(n);
        // Duplicate texts happen in real vocabularies (e.g. unused slots); the first id wins, as
        // in sentencepiece and llama.cpp.
        for (std::size_t i = 0; i < n; ++i) index_.emplace(s_.tokens[i], static_cast<std::int32_t>(i));

        // End of generation: EOS, end of turn, end of message, and the turn-ending tokens chat
        // models name by text (llama.cpp stops on the same list): a Llama 3 instruct model ends
        // its answer with <|eot_id|> while its EOS is <|end_of_text|>; Qwen's is <|im_end|>.
        for (const std::int32_t id : {s_.eos, s_.eot, s_.eom})
            if (id != no_token) eog_.push_back(id);
        static constexpr std::string_view turn_ends[] = {
            "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
            "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "<|end_of_text|>", "<end_of_utterance>",
            "<｜end▁of▁sentence｜>"};  // DeepSeek's, with fullwidth bars
        for (const std::string_view t : turn_ends)
            if (const auto it = index_.find(t); it != index_.end()) {
                const token_type ty = s_.types[static_cast<std::size_t>(it->second)];
                if (ty == token_type::control || ty == token_type::user_defined) eog_.push_back(it->second);
            }
        std::sort(eog_.begin(), eog_.end());
        eog_.erase(std::unique(eog_.begin(), eog_.end()), eog_.end());
    }

    // Whether generating `id` ends the answer (see the constructor).
    bool is_eog(std::int32_t id) const noexcept { return std::binary_search(eog_.begin(), eog_.end(), id); }
    const std::vector<std::int32_t>& eog_ids() const noexcept { return eog_; }

    // Reads tokenizer.ggml.* from a GGUF file (a full model or a vocabulary-only file).
    static vocab from_gguf(const gguf::file& f) {
        const std::string& path = f.path();
        vocab_spec s;
        auto model = f.get<std::string>("tokenizer.ggml.model");
        if (!model) fail(path, ": no tokenizer in the file (tokenizer.ggml.model is missing)");
        s.model = std::move(*model);
        s.pre = f.get_or<std::string>("tokenizer.ggml.pre", "");
        auto tokens = f.get_array<std::string>("tokenizer.ggml.tokens");
        if (!tokens) fail(path, ": tokenizer.ggml.tokens is missing");
        s.tokens = std::move(*tokens);
        if (auto scores = f.get_array<float>("tokenizer.ggml.scores")) s.scores = std::move(*scores);
        if (auto types = f.get_array<std::int32_t>("tokenizer.ggml.token_type")) {
            s.types.reserve(types->size());
            for (std::size_t i = 0; i < types->size(); ++i) {
                const std::int32_t t = (*types)[i];
                if (t < 0 || t > static_cast<std::int32_t>(token_type::byte))
                    fail(path, ": token ", i, " has unknown token type ", t);
                s.types.push_back(static_cast<token_type>(t));
            }
        }
        if (auto merges = f.get_array<std::string>("tokenizer.ggml.merges")) s.merges = std::move(*merges);

        const bool spm = s.model == "llama";
        s.bos = special_id(f, "tokenizer.ggml.bos_token_id");
        s.eos = special_id(f, "tokenizer.ggml.eos_token_id");
        s.unk = special_id(f, "tokenizer.ggml.unknown_token_id");
        s.sep = special_id(f, "tokenizer.ggml.seperator_token_id");  // sic: the key llama.cpp writes
        s.pad = special_id(f, "tokenizer.ggml.padding_token_id");
        s.eot = special_id(f, "tokenizer.ggml.eot_token_id");
        s.eom = special_id(f, "tokenizer.ggml.eom_token_id");
        // Defaults as llama.cpp applies them: SPM models prepend BOS and a space unless told not to.
        s.add_bos = f.get_or<bool>("tokenizer.ggml.add_bos_token", spm);
        s.add_eos = f.get_or<bool>("tokenizer.ggml.add_eos_token", false);
        s.add_space_prefix = f.get_or<bool>("tokenizer.ggml.add_space_prefix", spm);
        return vocab(std::move(s), path);
    }

    const std::string& model() const noexcept { return s_.model; }
    const std::string& pre() const noexcept { return s_.pre; }
    const std::optional<std::vector<std::string>>& pre_patterns() const noexcept { return s_.pre_patterns; }
    bool ignore_merges() const noexcept { return s_.ignore_merges; }
    std::size_t size() const noexcept { return s_.tokens.size(); }
    bool contains(std::int32_t id) const noexcept { return id >= 0 && static_cast<std::size_t>(id) < size(); }

    // Per-token accessors; `id` must be valid (contains(id)).
    const std::string& text(std::int32_t id) const noexcept { return s_.tokens[static_cast<std::size_t>(id)]; }
    float score(std::int32_t id) const noexcept { return s_.scores[static_cast<std::size_t>(id)]; }
    token_type type(std::int32_t id) const noexcept { return s_.types[static_cast<std::size_t>(id)]; }

    // The id of a token text, or no_token.
    std::int32_t find(std::string_view text) const noexcept {
        const auto it = index_.find(text);
        return it == index_.end() ? no_token : it->second;
    }

    const std::vector<std::string>& merges() const noexcept { return s_.merges; }

    std::int32_t bos() const noexcept { return s_.bos; }
    std::int32_t eos() const noexcept { return s_.eos; }
    std::int32_t unk() const noexcept { return s_.unk; }
    std::int32_t sep() const noexcept { return s_.sep; }
    std::int32_t pad() const noexcept { return s_.pad; }
    std::int32_t eot() const noexcept { return s_.eot; }
    std::int32_t eom() const noexcept { return s_.eom; }
    bool add_bos() const noexcept { return s_.add_bos; }
    bool add_eos() const noexcept { return s_.add_eos; }
    bool add_space_prefix() const noexcept { return s_.add_space_prefix; }

private:
    // GGUF writers store "none" as u32 0xFFFFFFFF; some write -1. Both mean absent.
    static std::int32_t special_id(const gguf::file& f, std::string_view key) {
        const gguf::value* v = f.find(key);
        if (!v) return no_token;
        const auto i = v->as_int();
        if (!i) fail(f.path(), ": metadata key '", key, "' is ", gguf::value_type_name(v->type()), ", expected an integer");
        if (*i == -1 || *i == 0xFFFFFFFF) return no_token;
        if (*i < 0 || *i > INT32_MAX) fail(f.path(), ": ", key, " ", *i, " is not a valid token id");
        return static_cast<std::int32_t>(*i);
    }

    // Heterogeneous lookup: the hot merge loop probes with string_views into the input.
    struct text_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };

    vocab_spec s_;
    std::unordered_map<std::string, std::int32_t, text_hash, std::equal_to<>> index_;
    std::vector<std::int32_t> eog_;  // sorted
};

}  // namespace lmtk::tokenize
