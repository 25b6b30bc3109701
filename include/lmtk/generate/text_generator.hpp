#pragma once
// lmtk::text_generator: what template code may rely on to drive either a local
// lmtk::pipeline or an lmtk::remote_model (<lmtk/client/remote.hpp>) without knowing which:
//
//   template <lmtk::text_generator G>
//   void tell(G& g) {
//       for (const std::string& piece : g.stream("Once upon a time", {.max_tokens = 32})) std::cout << piece;
//       lmtk::completion c = g.generate("Once", {.max_tokens = 8}, [](std::string_view s) { std::cout << s; });
//   }
//
// Only the shape both share is required: generate with and without a text callback returning a
// completion, and stream returning an input range of text pieces. Members only one side has
// (a local pipeline's model() or sampler(), a remote model's url()) stay outside the concept.
#include <lmtk/generate/pipeline.hpp>

#include <concepts>
#include <ranges>
#include <string>
#include <string_view>

namespace lmtk {

template <class G>
concept text_generator = requires(G& g, std::string_view prompt, generate_options opt, void (*on_text)(std::string_view)) {
    { g.generate(prompt, opt) } -> std::convertible_to<completion>;
    { g.generate(prompt, opt, on_text) } -> std::convertible_to<completion>;
    // stream() hands back a generation object by value; it is iterated as an lvalue
    // (`for (const std::string& piece : g.stream(...))`), hence the `&`.
    requires std::ranges::input_range<decltype(g.stream(prompt, opt))&>;
    requires std::convertible_to<std::ranges::range_reference_t<decltype(g.stream(prompt, opt))&>, const std::string&>;
};

// The local pipeline is the reference shape (any sampler chain; greedy stands for all of them).
static_assert(text_generator<pipeline<quant::default_set, target::cpu<>, sample::chain<sample::greedy>>>);

}  // namespace lmtk
