#pragma once
// Hugging Face tokenizer.json (the `tokenizers` library's file) read natively into a vocab the
// BPE tokenizer runs on. Two families are recognised from what the file states:
//
//   byte-level BPE    pre_tokenizer ByteLevel (GPT-2's regex), decoder ByteLevel
//                     -> model "gpt2", pre "gpt-2"
//   BPE with bytes    normalizer Prepend("▁") + Replace(" " -> "▁"), or pre_tokenizer Metaspace
//   fallback          without splitting; <0xXX> byte tokens when byte_fallback (Llama, Mistral,
//                     TinyStories: converted from SentencePiece) -> model "llama" with merges
//
// Byte-level BPE takes its splits from the file: ByteLevel's own (GPT-2's pattern), Split with a
// Regex or String (behavior Isolated), Digits (pre_tokenizer.hpp runs them). Anything else
// (WordPiece, Unigram, other Split behaviours, ...) is refused by name rather than tokenized
// wrongly. Special tokens come from added_tokens (special -> control, otherwise
// user-defined); BOS/EOS and add_bos from tokenizer_config.json, the post-processor template
// and config.json, in that order of preference.
//
// Scores for the "llama" form are derived from merge ranks (a token made by merge r scores -r),
// so that a SentencePiece-style tokenizer that merges by score (llama.cpp's, for a GGUF written by
// `lmtk convert`) picks merges in the same order; lmtk itself uses the merges.
#include <lmtk/core/error.hpp>
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/io/safetensors.hpp>  // safetensors::detail::parse_json: bounded, duplicate-checked
#include <lmtk/tokenize/pre_tokenizer.hpp>
#include <lmtk/tokenize/regex.hpp>
#include <lmtk/tokenize/spm.hpp>
#include <lmtk/tokenize/sentencepiece_model.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

namespace detail {

inline nlohmann::json read_json_file(const std::string& path) {
    const core::mapped_file m(path);
    // tokenizer.json of a 256k vocabulary is ~20 MB; far above that is not a tokenizer.
    if (m.size() > 512u << 20) fail(path, ": implausibly large (", m.size(), " bytes)");
    return safetensors::detail::parse_json(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), path);
}

inline std::optional<nlohmann::json> read_json_if_exists(const std::filesystem::path& p) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) return std::nullopt;
    return read_json_file(p.string());
}

// {"type": "Sequence", "normalizers": [...]} or a single one -> the list of parts.
inline std::vector<const nlohmann::json*> sequence_parts(const nlohmann::json& j, const char* list_key) {
    std::vector<const nlohmann::json*> out;
    if (j.is_null()) return out;
    if (j.is_object() && j.value("type", "") == "Sequence") {
        const auto it = j.find(list_key);
        if (it != j.end() && it->is_array())
            for (const auto& p : *it) out.push_back(&p);
        return out;
    }
    out.push_back(&j);
    return out;
}

inline std::string string_pattern(const nlohmann::json& pat) {
    if (pat.is_object()) {
        const auto s = pat.find("String");
        if (s != pat.end() && s->is_string()) return s->get<std::string>();
    }
    return std::string("\x01regex");  // a Regex pattern: never equal to a plain string
}

// A token given as "text" or {"content": "text", ...} (tokenizer_config.json).
inline std::optional<std::string> token_text(const nlohmann::json& j) {
    if (j.is_string()) return j.get<std::string>();
    if (j.is_object()) {
        const auto c = j.find("content");
        if (c != j.end() && c->is_string()) return c->get<std::string>();
    }
    return std::nullopt;
}

}  // namespace detail

// Extra facts from next to tokenizer.json; all optional.
struct tokenizer_json_context {
    std::optional<nlohmann::json> tokenizer_config;  // tokenizer_config.json
    std::optional<nlohmann::json> model_config;      // config.json (bos_token_id, eos_token_id)
};

namespace detail {

inline vocab vocab_from_tokenizer_json_value(const std::string& path, const nlohmann::json& j, const tokenizer_json_context& ctx) {
    if (!j.is_object()) fail(path, ": not a JSON object");
    const auto model_it = j.find("model");
    if (model_it == j.end() || !model_it->is_object()) fail(path, ": no 'model' object");
    const nlohmann::json& m = *model_it;
    const std::string type = m.value("type", "");
    if (type != "BPE") fail(path, ": tokenizer model '", type, "' is not supported (supported: BPE)");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (const auto it = m.find(k); it != m.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
            fail(path, ": BPE with ", k, " is not supported");

    // --- which family ----------------------------------------------------------------------
    const nlohmann::json null_json;
    const nlohmann::json& normalizer = j.contains("normalizer") ? j["normalizer"] : null_json;
    const nlohmann::json& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : null_json;
    bool byte_level = false, prepend_space = false, spaces_to_metaspace = false;
    std::vector<std::string> patterns;  // the splits, in order (pre_tokenizer.hpp)
    for (const nlohmann::json* p : detail::sequence_parts(pre, "pretokenizers")) {
        if (!p->is_object()) fail(path, ": malformed pre_tokenizer");
        const std::string t = p->value("type", "");
        if (t == "ByteLevel") {
            byte_level = true;
            prepend_space = prepend_space || p->value("add_prefix_space", false);
            if (p->value("use_regex", true)) patterns.emplace_back(pre_patterns::gpt2);
        } else if (t == "Split") {
            // Only "Isolated" (each match a piece of its own, as every BPE family uses); the
            // other behaviours merge matches into neighbours and would split differently.
            const std::string behavior = p->value("behavior", "");
            if (behavior != "Isolated") fail(path, ": Split pre-tokenizer with behavior '", behavior, "' is not supported (supported: Isolated)");
            if (p->value("invert", false)) fail(path, ": inverted Split pre-tokenizer is not supported");
            const auto pat = p->find("pattern");
            if (pat == p->end() || !pat->is_object()) fail(path, ": Split pre-tokenizer without a pattern");
            if (const auto r = pat->find("Regex"); r != pat->end() && r->is_string()) {
                patterns.push_back(r->get<std::string>());
            } else if (const auto str = pat->find("String"); str != pat->end() && str->is_string() && !str->get<std::string>().empty()) {
                std::string escaped;  // a literal string, as a pattern
                for (const char c : str->get<std::string>()) {
                    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) escaped += '\\';
                    escaped += c;
                }
                patterns.push_back(std::move(escaped));
            } else {
                fail(path, ": Split pre-tokenizer pattern is neither a Regex nor a non-empty String");
            }
            try {
                const regex check(patterns.back());  // a pattern lmtk cannot run fails here, at load, by name
            } catch (const error& e) {
                fail(path, ": ", e.what());
            }
        } else if (t == "Digits") {
            patterns.emplace_back(p->value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
        } else if (t == "Metaspace") {
            if (p->value("replacement", "") != std::string(detail::spm_space))
                fail(path, ": Metaspace with a replacement other than U+2581 is not supported");
            // Older files have no `split` key and always split on the metaspace.
            if (p->value("split", true)) fail(path, ": Metaspace pre-tokenizer that splits words is not supported yet");
            const std::string scheme = p->value("prepend_scheme", p->value("add_prefix_space", true) ? "always" : "never");
            spaces_to_metaspace = true;
            prepend_space = scheme == "first" || scheme == "always";
        } else {
            fail(path, ": pre-tokenizer '", t, "' is not supported (supported: ByteLevel, Split (Isolated), Digits, Metaspace)");
        }
    }
    if (!patterns.empty() && !byte_level) fail(path, ": Split or Digits pre-tokenizers without ByteLevel are not supported");
    for (const nlohmann::json* n : detail::sequence_parts(normalizer, "normalizers")) {
        if (!n->is_object()) fail(path, ": malformed normalizer");
        const std::string t = n->value("type", "");
        if (t == "Prepend" && n->value("prepend", "") == std::string(detail::spm_space)) {
            prepend_space = true;
        } else if (t == "Replace" && n->contains("pattern") && detail::string_pattern((*n)["pattern"]) == " " &&
                   n->value("content", "") == std::string(detail::spm_space)) {
            spaces_to_metaspace = true;
        } else if (t == "NFC" && byte_level) {
            // GPT-2 text is assumed NFC already; lmtk does not renormalize (documented limitation).
        } else {
            fail(path, ": normalizer '", t, "' is not supported (supported: Prepend(\"▁\"), Replace(\" \" -> \"▁\"))");
        }
    }
    if (byte_level == spaces_to_metaspace)
        fail(path, byte_level ? ": mixes byte-level and metaspace handling of spaces"
                              : ": neither byte-level nor metaspace BPE (no ByteLevel pre-tokenizer, no \"▁\" normalizer)");

    // --- tokens ------------------------------------------------------------------------------
    const auto vit = m.find("vocab");
    if (vit == m.end() || !vit->is_object() || vit->empty()) fail(path, ": model.vocab is missing or empty");
    // Ids index the token table, so an id sizes an allocation: a single id of 2^24 - 1 in an
    // 86 KB file once cost gigabytes of placeholder tokens before any error. The file lists
    // vocab.size() + added_tokens.size() tokens; ids are refused from that count on, so the
    // table (and its placeholders for holes, which can then only come from added tokens that
    // repeat vocab entries) grows with the file, never with the numbers written in it. Real
    // files number their tokens densely from 0.
    const auto added_it = j.find("added_tokens");
    const std::size_t n_stated =
        vit->size() + (added_it != j.end() && added_it->is_array() ? added_it->size() : std::size_t{0});
    const auto max_tokens = static_cast<std::int64_t>(std::min<std::size_t>(n_stated, std::numeric_limits<std::int32_t>::max()));
    std::vector<std::string> tokens;
    std::vector<bool> present;
    auto place = [&](const std::string& text, const nlohmann::json& id_json) -> std::int32_t {
        if (!id_json.is_number_integer() || id_json.get<std::int64_t>() < 0)
            fail(path, ": token '", text, "' has an invalid id ", id_json.dump());
        if (id_json.get<std::int64_t>() >= max_tokens)
            fail(path, ": token '", text, "' has id ", id_json.dump(), ", but the file lists only ", n_stated,
                 " tokens (vocab and added_tokens), so ids must be below that");
        const auto id = static_cast<std::size_t>(id_json.get<std::int64_t>());
        if (id >= tokens.size()) {
            tokens.resize(id + 1);
            present.resize(id + 1, false);
        }
        if (present[id] && tokens[id] != text)
            fail(path, ": id ", id, " is both '", tokens[id], "' and '", text, "'");
        tokens[id] = text;
        present[id] = true;
        return static_cast<std::int32_t>(id);
    };
    for (auto it = vit->begin(); it != vit->end(); ++it) place(it.key(), *it);

    vocab_spec s;
    s.model = byte_level ? "gpt2" : "llama";
    if (byte_level) {
        s.ignore_merges = m.value("ignore_merges", false);
        s.pre = pre_tokenizer_name(patterns, s.ignore_merges);  // so that `lmtk convert` can name it in a GGUF
        s.pre_patterns = std::move(patterns);
    }
    s.add_space_prefix = prepend_space;
    std::vector<token_type> types;
    std::vector<std::pair<std::int32_t, bool>> added;  // id, special
    if (const auto at = added_it; at != j.end() && !at->is_null()) {
        if (!at->is_array()) fail(path, ": added_tokens is not a list");
        for (const auto& a : *at) {
            if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
                fail(path, ": malformed entry in added_tokens");
            added.emplace_back(place(a["content"].get<std::string>(), a["id"]), a.value("special", false));
        }
    }
    types.assign(tokens.size(), token_type::normal);
    for (std::size_t i = 0; i < tokens.size(); ++i)
        if (!present[i]) {
            // A hole in the ids: fill it with an unused placeholder, as llama.cpp's converter does.
            tokens[i] = "[PAD" + std::to_string(i) + "]";
            types[i] = token_type::unused;
        }
    for (const auto& [id, special] : added) types[static_cast<std::size_t>(id)] = special ? token_type::control : token_type::user_defined;
    if (!byte_level)
        for (std::size_t i = 0; i < tokens.size(); ++i)
            if (types[i] == token_type::normal && detail::parse_byte_token(tokens[i]) >= 0) types[i] = token_type::byte;
    std::unordered_map<std::string, std::int32_t> id_of;
    id_of.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) id_of.emplace(tokens[i], static_cast<std::int32_t>(i));
    auto find = [&](const std::string& t) {
        const auto it = id_of.find(t);
        return it == id_of.end() ? no_token : it->second;
    };
    if (const auto u = m.find("unk_token"); u != m.end() && u->is_string()) {
        s.unk = find(u->get<std::string>());
        if (s.unk != no_token) types[static_cast<std::size_t>(s.unk)] = token_type::unknown;
    }

    // --- merges: "a b" strings, or [a, b] pairs in newer files ------------------------------
    if (const auto mg = m.find("merges"); mg != m.end() && !mg->is_null()) {
        if (!mg->is_array()) fail(path, ": model.merges is not a list");
        s.merges.reserve(mg->size());
        for (const auto& e : *mg) {
            if (e.is_string()) s.merges.push_back(e.get<std::string>());
            else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string())
                s.merges.push_back(e[0].get<std::string>() + " " + e[1].get<std::string>());
            else fail(path, ": malformed entry in model.merges");
        }
    }
    if (!byte_level && s.merges.empty()) fail(path, ": a metaspace BPE tokenizer without merges");
    if (!byte_level) {
        // score(token made by merge r) = -r: earlier merges win in a score-driven merger.
        s.scores.assign(tokens.size(), 0.0f);
        std::vector<bool> scored(tokens.size(), false);
        for (std::size_t r = 0; r < s.merges.size(); ++r) {
            const std::string& mg = s.merges[r];
            const std::size_t sp = mg.find(' ', 1);
            if (sp == std::string::npos) continue;
            const std::int32_t id = find(mg.substr(0, sp) + mg.substr(sp + 1));
            if (id == no_token || scored[static_cast<std::size_t>(id)]) continue;
            scored[static_cast<std::size_t>(id)] = true;
            s.scores[static_cast<std::size_t>(id)] = -static_cast<float>(r);
        }
        // Tokens no merge makes (single characters, bytes, specials) rank below every merge.
        for (std::size_t i = 0; i < tokens.size(); ++i)
            if (!scored[i]) s.scores[i] = -static_cast<float>(s.merges.size());
    }

    // --- BOS / EOS ----------------------------------------------------------------------------
    std::optional<bool> add_bos, add_eos;
    if (ctx.tokenizer_config && ctx.tokenizer_config->is_object()) {
        const nlohmann::json& tc = *ctx.tokenizer_config;
        if (const auto b = tc.find("bos_token"); b != tc.end())
            if (auto t = detail::token_text(*b)) s.bos = find(*t);
        if (const auto e = tc.find("eos_token"); e != tc.end())
            if (auto t = detail::token_text(*e)) s.eos = find(*t);
        if (const auto p = tc.find("pad_token"); p != tc.end())
            if (auto t = detail::token_text(*p)) s.pad = find(*t);
        if (const auto b = tc.find("add_bos_token"); b != tc.end() && b->is_boolean()) add_bos = b->get<bool>();
        if (const auto e = tc.find("add_eos_token"); e != tc.end() && e->is_boolean()) add_eos = e->get<bool>();
    }
    // The post-processor's template says which special token goes before the text.
    if (const auto pp = j.find("post_processor"); pp != j.end() && pp->is_object() && pp->value("type", "") == "TemplateProcessing") {
        const auto single = pp->find("single");
        if (single != pp->end() && single->is_array() && !single->empty()) {
            const nlohmann::json& first = (*single)[0];
            const nlohmann::json& last = single->back();
            auto special_id = [&](const nlohmann::json& e) -> std::int32_t {
                if (!e.is_object() || !e.contains("SpecialToken") || !e["SpecialToken"].is_object()) return no_token;
                const auto id = e["SpecialToken"].find("id");
                return id != e["SpecialToken"].end() && id->is_string() ? find(id->get<std::string>()) : no_token;
            };
            if (const std::int32_t b = special_id(first); b != no_token) {
                if (s.bos == no_token) s.bos = b;
                if (!add_bos) add_bos = true;
            } else if (!add_bos) {
                add_bos = false;
            }
            if (const std::int32_t e = special_id(last); e != no_token && single->size() > 1) {
                if (s.eos == no_token) s.eos = e;
                if (!add_eos) add_eos = true;
            }
        }
    }
    if (ctx.model_config && ctx.model_config->is_object()) {
        // An id or a list of ids (chat models list several end tokens); invalid ones are ignored.
        auto ids_of = [&](const char* key) {
            std::vector<std::int32_t> ids;
            const auto it = ctx.model_config->find(key);
            if (it == ctx.model_config->end()) return ids;
            auto take = [&](const nlohmann::json& x) {
                if (x.is_number_integer() && x.get<std::int64_t>() >= 0 &&
                    static_cast<std::uint64_t>(x.get<std::int64_t>()) < tokens.size())
                    ids.push_back(static_cast<std::int32_t>(x.get<std::int64_t>()));
            };
            if (it->is_array())
                for (const auto& x : *it) take(x);
            else
                take(*it);
            return ids;
        };
        if (const auto b = ids_of("bos_token_id"); s.bos == no_token && !b.empty()) s.bos = b[0];
        const auto e = ids_of("eos_token_id");
        if (s.eos == no_token && !e.empty()) s.eos = e[0];
        for (const std::int32_t id : e)  // a second end id ends generation too
            if (id != s.eos && s.eot == no_token) s.eot = id;
    }
    // GPT-2 style vocabularies mark their end token only through config files; a lone
    // <|endoftext|> is the usual one.
    if (byte_level && s.eos == no_token) s.eos = find("<|endoftext|>");
    s.add_bos = add_bos.value_or(false);
    s.add_eos = add_eos.value_or(false);
    s.tokens = std::move(tokens);
    s.types = std::move(types);
    return vocab(std::move(s), path);
}

}  // namespace detail

// The vocab of tokenizer.json text already parsed (by core::parse_json_file); `origin` names it
// in errors. A value of the wrong JSON type where the reader looks a field up with a default
// (nlohmann's value() throws type_error then) is a broken file too: it ends in lmtk::error like
// every other, not in a library exception the caller did not expect.
inline vocab vocab_from_parsed_tokenizer_json(const nlohmann::json& j, const std::string& origin,
                                              const tokenizer_json_context& ctx = {}) {
    try {
        return detail::vocab_from_tokenizer_json_value(origin, j, ctx);
    } catch (const nlohmann::json::exception& e) {
        fail(origin, ": malformed tokenizer.json (", e.what(), ")");
    }
}

// Reads tokenizer.json at `path`.
inline vocab vocab_from_tokenizer_json(const std::string& path, const tokenizer_json_context& ctx = {}) {
    return vocab_from_parsed_tokenizer_json(detail::read_json_file(path), path, ctx);
}

// The tokenizer of a checkpoint folder: tokenizer.json (preferred, as transformers does), else a
// SentencePiece tokenizer.model, with tokenizer_config.json and config.json beside it.
inline vocab vocab_from_hf_folder(const std::filesystem::path& dir) {
    const auto tj = dir / "tokenizer.json";
    std::error_code ec;
    tokenizer_json_context ctx;
    ctx.tokenizer_config = detail::read_json_if_exists(dir / "tokenizer_config.json");
    ctx.model_config = detail::read_json_if_exists(dir / "config.json");
    if (!std::filesystem::is_regular_file(tj, ec)) {
        const auto sp = dir / "tokenizer.model";
        if (!std::filesystem::is_regular_file(sp, ec)) fail(dir.string(), ": no tokenizer.json or tokenizer.model in the checkpoint folder");
        vocab_spec s = sentencepiece_model_spec(sp.string());
        // tokenizer_config.json says whether BOS/EOS are added; config.json may name other ids.
        const auto flag = [&](const char* key, bool& out) {
            if (!ctx.tokenizer_config || !ctx.tokenizer_config->is_object()) return;
            if (const auto it = ctx.tokenizer_config->find(key); it != ctx.tokenizer_config->end() && it->is_boolean())
                out = it->get<bool>();
        };
        flag("add_bos_token", s.add_bos);
        flag("add_eos_token", s.add_eos);
        const auto id = [&](const char* key, std::int32_t& out) {
            if (!ctx.model_config || !ctx.model_config->is_object()) return;
            const auto it = ctx.model_config->find(key);
            if (it == ctx.model_config->end() || !it->is_number_integer()) return;
            const std::int64_t v = it->get<std::int64_t>();
            if (v >= 0 && v < static_cast<std::int64_t>(s.tokens.size())) out = static_cast<std::int32_t>(v);
        };
        id("bos_token_id", s.bos);
        id("eos_token_id", s.eos);
        return vocab(std::move(s), sp.string());
    }
    return vocab_from_tokenizer_json(tj.string(), ctx);
}

}  // namespace lmtk::tokenize
