#include <catch2/catch.hpp>

#include <lmtk/serve/chat_template.hpp>

#include <string>
#include <vector>

using namespace lmtk::serve;

namespace {
// Fragments of the real templates' Jinja text: only the marker substrings matter.
const char* llama3 = "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' %}{{ '<|eot_id|>' }}";
const char* chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% endfor %}";
const char* gemma = "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}";
const char* phi3 = "{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n'}}{{ '<|assistant|>\n' }}";
const char* zephyr = "{{ '<|user|>\n' + message['content'] + eos_token }}{{ '<|assistant|>' }}";
const char* llama2 = "{{ bos_token + '[INST] <<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' }}";
const char* mistral = "{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}";
}  // namespace

TEST_CASE("chat templates are recognised by their markers", "[serve]") {
    CHECK(detect_chat_format(llama3) == chat_format::llama3);
    CHECK(detect_chat_format(chatml) == chat_format::chatml);
    CHECK(detect_chat_format(gemma) == chat_format::gemma);
    CHECK(detect_chat_format(phi3) == chat_format::phi3);
    CHECK(detect_chat_format(zephyr) == chat_format::zephyr);
    CHECK(detect_chat_format(llama2) == chat_format::llama2);
    CHECK(detect_chat_format(mistral) == chat_format::mistral);
    CHECK(detect_chat_format("") == chat_format::plain);
    CHECK(detect_chat_format("{{ messages }}") == chat_format::plain);
}

TEST_CASE("formatters write the families' turn structure", "[serve]") {
    const std::vector<chat_message> m = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
    CHECK(format_chat(chat_format::chatml, m) ==
          "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
          "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
    CHECK(format_chat(chat_format::llama3, m) ==
          "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi"
          "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>user"
          "<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    CHECK(format_chat(chat_format::llama2, m) ==
          "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]");
    CHECK(format_chat(chat_format::mistral, m) == "[INST] Be brief.\n\nHi [/INST]Hello</s>[INST] Bye [/INST]");
    CHECK(format_chat(chat_format::gemma, m) ==
          "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
          "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
    CHECK(format_chat(chat_format::phi3, m) ==
          "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n");
    CHECK(format_chat(chat_format::zephyr, m) ==
          "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n<|user|>\nBye</s>\n<|assistant|>\n");
    CHECK(format_chat(chat_format::plain, m) == "system: Be brief.\nuser: Hi\nassistant: Hello\nuser: Bye\nassistant:");
}

TEST_CASE("a system message alone still reaches folding formats", "[serve]") {
    const std::vector<chat_message> m = {{"system", "Only system."}};
    CHECK(format_chat(chat_format::gemma, m) == "<start_of_turn>user\nOnly system.<end_of_turn>\n<start_of_turn>model\n");
    CHECK(format_chat(chat_format::mistral, m) == "[INST] Only system. [/INST]");
}
