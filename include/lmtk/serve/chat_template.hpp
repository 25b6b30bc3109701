#pragma once
// Chat templates without a Jinja engine: a GGUF's tokenizer.chat_template is recognised by
// marker substrings that only one family uses, and mapped to a built-in formatter that
// produces the same text as the family's template for plain system/user/assistant turns.
// Templates nothing matches fall back to `plain`, which servers report (/props, /api/show) so
// users know their template was not understood.
//
//   const auto fmt = lmtk::serve::detect_chat_format(tmpl);
//   std::string prompt = lmtk::serve::format_chat(fmt, messages, /*add_generation_prompt=*/true);
//
// The text contains control-token spellings ("<|im_start|>", "</s>"): tokenize it with
// special-token parsing on. The leading BOS is not written; the tokenizer adds it.
#include <nlohmann/json.hpp>

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::serve {

enum class chat_format { plain, llama2, llama3, chatml, mistral, zephyr, phi3, gemma };

constexpr std::string_view to_string(chat_format f) noexcept {
    switch (f) {
        case chat_format::plain: return "plain";
        case chat_format::llama2: return "llama2";
        case chat_format::llama3: return "llama3";
        case chat_format::chatml: return "chatml";
        case chat_format::mistral: return "mistral";
        case chat_format::zephyr: return "zephyr";
        case chat_format::phi3: return "phi3";
        case chat_format::gemma: return "gemma";
    }
    return "plain";
}

struct chat_message {
    std::string role;     // system | user | assistant (anything else is written as given)
    std::string content;
    // The message's other fields (tool_calls, tool_call_id, name, ...; "content": null when the
    // client sent none), given to a Jinja template as the client wrote them. Built-in formats
    // ignore them. Keys in the client's order.
    nlohmann::ordered_json extra;
};

// Order matters: the more specific markers first. Llama-3 templates also mention nothing of
// ChatML; Phi-3 and Zephyr share "<|assistant|>" and differ in their end-of-turn marker;
// Llama-2 and Mistral share "[INST]" and only Llama-2 has a <<SYS>> block.
inline chat_format detect_chat_format(std::string_view tmpl) noexcept {
    const auto has = [&](std::string_view s) { return tmpl.find(s) != std::string_view::npos; };
    if (has("<|start_header_id|>") && has("<|eot_id|>")) return chat_format::llama3;
    if (has("<|im_start|>")) return chat_format::chatml;
    if (has("<start_of_turn>")) return chat_format::gemma;
    if (has("<|assistant|>") && has("<|end|>")) return chat_format::phi3;
    if (has("<|assistant|>") || has("<|user|>")) return chat_format::zephyr;
    if (has("[INST]") && has("<<SYS>>")) return chat_format::llama2;
    if (has("[INST]")) return chat_format::mistral;
    return chat_format::plain;
}

// Strings that end an assistant turn in text form. The end-of-turn tokens themselves are
// end-of-generation tokens already when the vocabulary marks them (eos/eot); these catch
// models whose marker is an ordinary token.
inline std::vector<std::string> chat_stop_strings(chat_format f) {
    switch (f) {
        case chat_format::chatml: return {"<|im_end|>"};
        case chat_format::llama3: return {"<|eot_id|>"};
        case chat_format::gemma: return {"<end_of_turn>"};
        case chat_format::phi3: return {"<|end|>"};
        case chat_format::zephyr: return {"</s>"};
        case chat_format::plain: return {"\nuser:"};
        default: return {};
    }
}

// What each format does, for /props and /api/show.
constexpr std::string_view describe(chat_format f) noexcept {
    switch (f) {
        case chat_format::plain:
            return "plain fallback (no known chat template): one 'role: content' line per message, then 'assistant:'";
        case chat_format::llama2: return "Llama-2: [INST] <<SYS>>...<</SYS>> user [/INST] assistant </s><s>";
        case chat_format::llama3: return "Llama-3: <|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>";
        case chat_format::chatml: return "ChatML: <|im_start|>role\\ncontent<|im_end|>";
        case chat_format::mistral: return "Mistral: [INST] user [/INST]assistant</s>";
        case chat_format::zephyr: return "Zephyr: <|role|>\\ncontent</s>";
        case chat_format::phi3: return "Phi-3: <|role|>\\ncontent<|end|>";
        case chat_format::gemma: return "Gemma: <start_of_turn>role\\ncontent<end_of_turn>";
    }
    return "";
}

namespace detail {

// Formats with no system role (Mistral, Gemma) and Llama-2 (whose system block lives inside
// the first [INST]) fold the system text into the first user message.
inline std::vector<chat_message> fold_system(std::span<const chat_message> in, std::string_view sep) {
    std::vector<chat_message> out;
    std::string pending;
    for (const chat_message& m : in) {
        if (m.role == "system") {
            if (!pending.empty()) pending += "\n";
            pending += m.content;
            continue;
        }
        chat_message c = m;
        if (!pending.empty() && c.role == "user") {
            c.content = pending + std::string(sep) + c.content;
            pending.clear();
        }
        out.push_back(std::move(c));
    }
    if (!pending.empty()) out.insert(out.begin(), chat_message{"user", pending, {}});
    return out;
}

}  // namespace detail

inline std::string format_chat(chat_format f, std::span<const chat_message> msgs, bool add_generation_prompt = true) {
    std::string out;
    switch (f) {
        case chat_format::chatml:
            for (const auto& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
            if (add_generation_prompt) out += "<|im_start|>assistant\n";
            break;
        case chat_format::llama3:
            for (const auto& m : msgs)
                out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
            if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            break;
        case chat_format::zephyr:
            for (const auto& m : msgs) out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
            if (add_generation_prompt) out += "<|assistant|>\n";
            break;
        case chat_format::phi3:
            for (const auto& m : msgs) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
            if (add_generation_prompt) out += "<|assistant|>\n";
            break;
        case chat_format::gemma:
            for (const auto& m : detail::fold_system(msgs, "\n\n")) {
                const std::string role = m.role == "assistant" ? "model" : m.role;
                out += "<start_of_turn>" + role + "\n" + m.content + "<end_of_turn>\n";
            }
            if (add_generation_prompt) out += "<start_of_turn>model\n";
            break;
        case chat_format::mistral: {
            for (const auto& m : detail::fold_system(msgs, "\n\n")) {
                if (m.role == "assistant") out += m.content + "</s>";
                else out += "[INST] " + m.content + " [/INST]";
            }
            break;
        }
        case chat_format::llama2: {
            // The system block goes inside the first [INST]; every later user turn opens a new
            // sequence ("<s>") after the previous assistant turn's "</s>".
            std::string system;
            bool first = true;
            for (const auto& m : msgs) {
                if (m.role == "system") {
                    system += m.content;
                    continue;
                }
                if (m.role == "assistant") {
                    out += " " + m.content + " </s>";
                    continue;
                }
                if (!first) out += "<s>";
                out += "[INST] ";
                if (!system.empty()) {
                    out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
                    system.clear();
                }
                out += m.content + " [/INST]";
                first = false;
            }
            if (!system.empty()) out += "[INST] <<SYS>>\n" + system + "\n<</SYS>>\n\n [/INST]";
            break;
        }
        case chat_format::plain:
            for (const auto& m : msgs) out += m.role + ": " + m.content + "\n";
            if (add_generation_prompt) out += "assistant:";
            break;
    }
    return out;
}

}  // namespace lmtk::serve
