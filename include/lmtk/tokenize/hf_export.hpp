#pragma once
// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) for any vocabulary lmtk
// loads, written so that `tokenizers` / transformers' AutoTokenizer encode exactly as lmtk does.
// Python clients that tokenize on their side (LMQL, transformers pipelines) need one, and a
// GGUF-only model has none.
//
//   byte-level BPE        model BPE (vocab, merges, ignore_merges), pre_tokenizer Sequence of
//                         Split(pattern, Isolated) for each step of the family's split, then
//                         ByteLevel without its own regex; decoder ByteLevel
//   BPE with byte tokens  model BPE with byte_fallback and the unknown token; normalizer
//   (SentencePiece-like)  Prepend("▁") when the vocabulary adds a space prefix, Replace(" ", "▁");
//                         decoder Replace("▁", " "), ByteFallback, Fuse, Strip(1 leading space)
//   SentencePiece (SPM)   the same BPE form, with merges derived from the scores: SPM merges the
//                         adjacent pair whose concatenation scores best, so every way of writing
//                         a token as two tokens becomes a merge, ranked by that token's score
//
// Control, unknown and user-defined tokens become added_tokens (special unless user-defined).
// BOS/EOS insertion follows the vocabulary's add_bos/add_eos, through a TemplateProcessing
// post-processor.
#include <lmtk/core/error.hpp>
#include <lmtk/tokenize/pre_tokenizer.hpp>
#include <lmtk/tokenize/spm.hpp>
#include <lmtk/tokenize/tokenizer.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

// Keys come out sorted (nlohmann::json's std::map): the readers do not care, and an ordered
// object would cost a linear search per insertion, hours for a 256k-token vocabulary.
struct hf_tokenizer_files {
    nlohmann::json tokenizer;         // tokenizer.json
    nlohmann::json tokenizer_config;  // tokenizer_config.json
};

namespace detail {

// SentencePiece BPE as merges: for every token t and every split of t into two tokens (a, b)
// at a character boundary, the merge "a b"; ranked by t's score (best first), then by the
// scores of a and b, as Hugging Face's converter from SentencePiece ranks them.
inline std::vector<std::pair<std::string, std::string>> merges_from_scores(const vocab& v) {
    struct m {
        float score, score_a, score_b;
        std::int32_t id, a, b;
    };
    std::vector<m> all;
    const auto n = static_cast<std::int32_t>(v.size());
    for (std::int32_t id = 0; id < n; ++id) {
        const token_type t = v.type(id);
        if (t != token_type::normal && t != token_type::undefined) continue;
        const std::string& text = v.text(id);
        for (std::size_t cut = 1; cut < text.size(); ++cut) {
            if ((static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) continue;  // inside a character
            const std::int32_t a = v.find(std::string_view(text).substr(0, cut));
            const std::int32_t b = v.find(std::string_view(text).substr(cut));
            if (a == no_token || b == no_token) continue;
            const auto normal = [&](std::int32_t x) { return v.type(x) == token_type::normal || v.type(x) == token_type::undefined; };
            if (!normal(a) || !normal(b)) continue;
            all.push_back({v.score(id), v.score(a), v.score(b), id, a, b});
        }
    }
    std::stable_sort(all.begin(), all.end(), [](const m& x, const m& y) {
        return std::tie(y.score, y.score_a, y.score_b) < std::tie(x.score, x.score_a, x.score_b);
    });
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(all.size());
    for (const m& x : all) out.emplace_back(v.text(x.a), v.text(x.b));
    return out;
}

inline nlohmann::json token_entry(std::int32_t id, const std::string& content, bool special) {
    return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
            {"normalized", false}, {"special", special}};
}

}  // namespace detail

// The Hugging Face files for `tok`. `chat_template`, when given, goes into tokenizer_config.json.
inline hf_tokenizer_files export_hf_tokenizer(const tokenizer& tok, const std::optional<std::string>& chat_template = std::nullopt) {
    using json = nlohmann::json;
    const vocab& v = tok.vocabulary();
    const bool byte_level = tok.kind() == "bpe (byte-level)";
    const bool spm = tok.kind() == "spm";
    const auto n = static_cast<std::int32_t>(v.size());

    json vocab_map = json::object();
    json added = json::array();
    std::unordered_set<std::string_view> seen;
    for (std::int32_t id = 0; id < n; ++id) {
        const std::string& text = v.text(id);
        // A JSON object cannot hold one text twice; later duplicates (placeholders) keep no id.
        if (!seen.insert(text).second) continue;
        vocab_map[text] = id;
        const token_type t = v.type(id);
        if (t == token_type::control || t == token_type::unknown || t == token_type::user_defined)
            added.push_back(detail::token_entry(id, text, t != token_type::user_defined));
    }

    json merges = json::array();
    if (spm) {
        for (auto& [a, b] : detail::merges_from_scores(v)) merges.push_back(json::array({a, b}));
    } else {
        for (const std::string& m : v.merges()) {
            const std::size_t sp = m.find(' ', 1);
            if (sp == std::string::npos) continue;
            merges.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
        }
    }

    json model = {{"type", "BPE"}, {"dropout", nullptr}};
    json t = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}};
    if (byte_level) {
        const pre_tokenizer_spec spec =
            v.pre_patterns() ? pre_tokenizer_spec{*v.pre_patterns(), v.ignore_merges()} : pre_tokenizer_for(v.pre());
        json steps = json::array();
        for (const std::string& p : spec.patterns)
            steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", p}}}, {"behavior", "Isolated"}, {"invert", false}});
        steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", v.add_space_prefix()}, {"trim_offsets", true}, {"use_regex", false}});
        t["normalizer"] = nullptr;
        t["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
        t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
        model["unk_token"] = v.unk() != no_token ? json(v.text(v.unk())) : json(nullptr);
        model["continuing_subword_prefix"] = nullptr;
        model["end_of_word_suffix"] = nullptr;
        model["fuse_unk"] = false;
        model["byte_fallback"] = false;
        model["ignore_merges"] = spec.ignore_merges;
    } else {
        const std::string space(detail::spm_space);
        json norms = json::array();
        if (v.add_space_prefix()) norms.push_back({{"type", "Prepend"}, {"prepend", space}});
        norms.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}});
        t["normalizer"] = {{"type", "Sequence"}, {"normalizers", norms}};
        t["pre_tokenizer"] = nullptr;
        json decoders = json::array();
        decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}});
        decoders.push_back({{"type", "ByteFallback"}});
        decoders.push_back({{"type", "Fuse"}});
        if (v.add_space_prefix()) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        t["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
        model["unk_token"] = v.unk() != no_token ? json(v.text(v.unk())) : json(nullptr);
        model["continuing_subword_prefix"] = nullptr;
        model["end_of_word_suffix"] = nullptr;
        model["fuse_unk"] = true;
        model["byte_fallback"] = true;
        model["ignore_merges"] = false;
    }
    model["vocab"] = std::move(vocab_map);
    model["merges"] = std::move(merges);

    // BOS/EOS around every encoded text, as the vocabulary asks.
    const bool bos = v.add_bos() && v.bos() != no_token, eos = v.add_eos() && v.eos() != no_token;
    if (bos || eos) {
        auto special = [&](std::int32_t id) { return json{{"SpecialToken", {{"id", v.text(id)}, {"type_id", 0}}}}; };
        json single = json::array(), pair = json::array(), specials = json::object();
        if (bos) single.push_back(special(v.bos()));
        single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
        if (eos) single.push_back(special(v.eos()));
        pair = single;
        if (bos) pair.push_back(special(v.bos()));
        pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
        if (eos) pair.push_back(special(v.eos()));
        for (const std::int32_t id : {bos ? v.bos() : no_token, eos ? v.eos() : no_token})
            if (id != no_token) specials[v.text(id)] = {{"id", v.text(id)}, {"ids", json::array({id})}, {"tokens", json::array({v.text(id)})}};
        t["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
    } else {
        t["post_processor"] = nullptr;
    }
    t["model"] = std::move(model);

    json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false},
                {"add_bos_token", v.add_bos()}, {"add_eos_token", v.add_eos()}};
    if (v.bos() != no_token) cfg["bos_token"] = v.text(v.bos());
    if (v.eos() != no_token) cfg["eos_token"] = v.text(v.eos());
    if (v.unk() != no_token) cfg["unk_token"] = v.text(v.unk());
    if (v.pad() != no_token) cfg["pad_token"] = v.text(v.pad());
    if (chat_template) cfg["chat_template"] = *chat_template;
    return {std::move(t), std::move(cfg)};
}

}  // namespace lmtk::tokenize
