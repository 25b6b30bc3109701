#pragma once
// lmtk::tokenize::pre_tokenizer: how byte-level BPE cuts text into pieces before merging (merges
// never cross a piece boundary). A pre-tokenizer is a list of regular expressions applied in
// turn: each one splits every piece so far into its matches and the stretches between them
// (both kept, as Hugging Face's Split pre-tokenizer with behavior "Isolated" and llama.cpp do).
//
// Where the patterns come from:
//   - tokenizer.json: its Split / ByteLevel / Digits pre-tokenizers (tokenizer_json.hpp);
//   - GGUF: `tokenizer.ggml.pre` names the pre-tokenizer of the model's family; the table below
//     maps each name llama.cpp writes to the patterns of that family's tokenizer.json.
// GPT-2's own pattern has a hand-written split (unicode::split_gpt2), used whenever the list is
// exactly that pattern; everything else runs on tokenize::regex.
#include <lmtk/core/error.hpp>
#include <lmtk/tokenize/regex.hpp>
#include <lmtk/tokenize/unicode.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

namespace pre_patterns {
// The patterns of the families' tokenizer.json files (facts of the formats, as data).
inline constexpr std::string_view gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view llama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view qwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view qwen35 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view superbpe =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view tekken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view gpt4o =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-2's pattern without its last alternative, after other splits (the stretches it leaves
// unmatched are kept as pieces anyway).
inline constexpr std::string_view gpt2_words = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
inline constexpr std::string_view cjk = R"([一-龥ࠀ-一가-퟿]+)";
inline constexpr std::string_view deepseek_llm_letters =
    R"(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)";
inline constexpr std::string_view deepseek_v3_words =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view bloom = R"( ?[^(\s|.,!?…。，、।۔،)]+)";
}  // namespace pre_patterns

// A pre-tokenizer family: its patterns, and whether a piece that is itself a token is taken
// whole before any merge (tokenizer.json's BPE `ignore_merges`, Llama 3 and others).
struct pre_tokenizer_spec {
    std::vector<std::string> patterns;
    bool ignore_merges = false;
};

// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` value `name` stands for. An unknown name
// throws: splitting with the wrong patterns would give wrong ids silently.
inline pre_tokenizer_spec pre_tokenizer_for(std::string_view name) {
    namespace p = pre_patterns;
    auto is = [&](std::initializer_list<std::string_view> names) {
        for (const std::string_view n : names)
            if (name == n) return true;
        return false;
    };
    auto make = [](std::initializer_list<std::string_view> pats, bool ignore_merges = false) {
        pre_tokenizer_spec s;
        for (const std::string_view x : pats) s.patterns.emplace_back(x);
        s.ignore_merges = ignore_merges;
        return s;
    };
    if (is({"gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "jina-es", "jina-de",
            "jina-v2-es", "jina-v2-de", "jina-v1-en", "jina-v2-code", "roberta-bpe", "gigachat", "a.x-4.0", "mellum",
            "modern-bert"}))
        return make({p::gpt2});
    if (is({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "glm4"}))
        return make({p::llama3}, true);
    if (is({"dbrx", "smaug-bpe", "chatglm-bpe"})) return make({p::llama3});
    if (is({"qwen2", "deepseek-r1-qwen", "kormo", "stablelm2", "hunyuan"})) return make({p::qwen2});
    if (is({"qwen35"})) return make({p::qwen35});
    if (is({"superbpe"})) return make({p::superbpe});
    if (is({"tekken"})) return make({p::tekken}, true);
    if (is({"gpt-4o", "minimax-m2"})) return make({p::gpt4o});
    if (is({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"}))
        return make({R"(\p{N})", p::gpt2_words});
    if (is({"falcon"})) return make({R"([\p{P}\$\+<=>\^~\|`]+)", p::gpt2_words, R"([0-9][0-9][0-9])"});
    if (is({"deepseek-llm"}))
        return make({R"([\r\n])", p::deepseek_llm_letters, R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)", R"(\s+$)", p::cjk, R"(\p{N}+)"});
    if (is({"deepseek-coder"})) return make({R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", p::cjk, R"(\p{N})"});
    if (is({"deepseek-v3", "hunyuan-dense"})) return make({R"(\p{N}{1,3})", R"([一-龥぀-ゟ゠-ヿ]+)", p::deepseek_v3_words});
    if (is({"poro-chat", "bloom", "gpt3-finnish"})) return make({p::bloom});
    if (is({"viking"})) return make({p::bloom, R"(\p{N})"});
    if (is({"default", ""}))  // what llama.cpp applies when a GGUF names none
        return make({R"([\p{P}\$\+<=>\^~\|]+)", p::gpt2_words, R"(\p{N}+)", R"([0-9][0-9][0-9])"});
    fail("pre-tokenizer '", name, "' (tokenizer.ggml.pre) is not known to lmtk; known: gpt-2, llama-bpe (llama3), qwen2, "
         "qwen35, deepseek-llm, deepseek-coder, deepseek-v3, falcon, mpt, starcoder, refact, command-r, smollm, "
         "tekken, gpt-4o, dbrx, smaug-bpe, chatglm-bpe, glm4, stablelm2, olmo, bloom, poro-chat, viking, superbpe, "
         "default (see tokenize/pre_tokenizer.hpp for every alias)");
}

// The tokenizer.ggml.pre name of the family whose patterns are exactly `patterns` (for writing a
// GGUF from a tokenizer.json); empty when no known family splits that way.
inline std::string pre_tokenizer_name(const std::vector<std::string>& patterns, bool ignore_merges = false) {
    for (const std::string_view name : {"gpt-2", "llama-bpe", "dbrx", "qwen2", "qwen35", "superbpe", "tekken", "gpt-4o", "starcoder",
                                        "falcon", "deepseek-llm", "deepseek-coder", "deepseek-v3", "bloom", "viking", "default"}) {
        const pre_tokenizer_spec s = pre_tokenizer_for(name);
        if (s.patterns == patterns && (s.ignore_merges == ignore_merges || name == "gpt-2")) return std::string(name);
    }
    return {};
}

class pre_tokenizer {
public:
    pre_tokenizer() = default;  // no split: all of a text is one piece

    explicit pre_tokenizer(const pre_tokenizer_spec& spec) : ignore_merges_(spec.ignore_merges) {
        if (spec.patterns.size() == 1 && spec.patterns[0] == pre_patterns::gpt2) {
            gpt2_ = true;
            return;
        }
        steps_.reserve(spec.patterns.size());
        for (const std::string& p : spec.patterns) steps_.emplace_back(p);
    }

    bool ignore_merges() const noexcept { return ignore_merges_; }

    // Calls on_piece(string_view) for each piece of `text`, in order; together they are `text`.
    template <class OnPiece>
    void split(std::string_view text, OnPiece&& on_piece) const {
        if (gpt2_) {
            unicode::split_gpt2(text, on_piece);
            return;
        }
        if (steps_.empty() || text.empty()) {
            if (!text.empty()) on_piece(text);
            return;
        }
        const std::vector<unicode::code_point> decoded = unicode::decode_utf8(text);
        const regex_text t = regex_text::of(decoded);
        using span_t = std::pair<std::uint32_t, std::uint32_t>;  // code point indices [first, last)
        std::vector<span_t> pieces{{0u, static_cast<std::uint32_t>(decoded.size())}}, next;
        for (const regex& re : steps_) {
            regex::scratch sc(re);
            next.clear();
            for (const auto& [a, b] : pieces) {
                std::uint32_t at = a;
                re.for_each_match(t, a, b, sc, [&](std::size_t s, std::size_t e) {
                    if (s > at) next.emplace_back(at, static_cast<std::uint32_t>(s));
                    if (e > s) next.emplace_back(static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(e));
                    at = static_cast<std::uint32_t>(std::max<std::size_t>(at, e));
                });
                if (at < b) next.emplace_back(at, b);
            }
            pieces.swap(next);
        }
        for (const auto& [a, b] : pieces) {
            const std::size_t from = decoded[a].offset;
            const std::size_t to = b < decoded.size() ? decoded[b].offset : text.size();
            on_piece(text.substr(from, to - from));
        }
    }

private:
    std::vector<regex> steps_;
    bool gpt2_ = false;
    bool ignore_merges_ = false;
};

}  // namespace lmtk::tokenize
