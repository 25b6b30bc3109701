#pragma once
// lmtk::sample::chain: filters applied left to right, then one pick stage, fixed at compile time.
//
//   namespace s = lmtk::sample;
//   s::chain<s::repetition_penalty, s::top_k, s::top_p, s::temperature, s::dist> sampler{
//       s::repetition_penalty{1.1f, 64}, s::top_k{40}, s::top_p{0.95f, 1},
//       s::temperature{0.8f}, s::dist{}};
//   s::rng gen(seed);
//   s::context ctx{history, gen};
//   std::int32_t token = sampler(logits, ctx);
//   sampler.get<s::temperature>().value = 0.0f;  // parameters change at run time
//
// Chain rules are static_asserts, so a wrong composition does not compile:
//   chain<>                    "a chain needs at least a pick stage"
//   chain<top_k>               "the last stage must pick a token (greedy or dist)"
//   chain<dist, top_k, dist>   "every stage before the last must be a filter"
//   get<S>() with S absent or repeated: "get<S>: S must appear exactly once"
#include <lmtk/core/error.hpp>
#include <lmtk/sample/candidate.hpp>
#include <lmtk/sample/stages.hpp>

#include <boost/hana/all_of.hpp>
#include <boost/hana/at.hpp>
#include <boost/hana/back.hpp>
#include <boost/hana/count.hpp>
#include <boost/hana/drop_back.hpp>
#include <boost/hana/equal.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/index_if.hpp>
#include <boost/hana/integral_constant.hpp>
#include <boost/hana/optional.hpp>
#include <boost/hana/range.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace lmtk::sample {

namespace detail {
namespace hana = boost::hana;

// Each check passes on an empty list so that only the "needs a pick stage" assert fires there.
template <class... Stages>
constexpr bool last_is_pick() {
    if constexpr (sizeof...(Stages) == 0) {
        return true;
    } else {
        return pick_stage<typename decltype(+hana::back(hana::tuple_t<Stages...>))::type>;
    }
}

template <class... Stages>
constexpr bool rest_are_filters() {
    if constexpr (sizeof...(Stages) == 0) {
        return true;
    } else {
        return hana::all_of(hana::drop_back(hana::tuple_t<Stages...>), [](auto s) {
            return hana::bool_c<filter_stage<typename decltype(s)::type>>;
        });
    }
}
}  // namespace detail

// A filter that can also judge one token (a grammar): while active(), the chain first samples
// without it and keeps the token when accepts() says yes; only a refused token makes it run
// the filter over every candidate and sample again. This is llama.cpp's order too: most steps
// then cost one check instead of one per vocabulary entry. With only temperature and the draw
// after the filter, the token has exactly the filtered distribution; truncating stages after
// it (top-k, top-p, min-p) are applied to the unfiltered candidates on the first try.
template <class S>
concept checking_filter = filter_stage<S> && requires(const S& s, std::int32_t t) {
    { s.active() } -> std::convertible_to<bool>;
    { s.accepts(t) } -> std::convertible_to<bool>;
};

template <class... Stages>
class chain {
    static constexpr std::size_t count = sizeof...(Stages);
    static_assert(count > 0, "a chain needs at least a pick stage (greedy or dist)");
    static_assert(((std::is_same_v<Stages, std::remove_cvref_t<Stages>>) && ...),
                  "stages are plain value types");
    static_assert(detail::last_is_pick<Stages...>(), "the last stage must pick a token (greedy or dist)");
    static_assert(detail::rest_are_filters<Stages...>(), "every stage before the last must be a filter");

public:
    chain() = default;
    explicit chain(Stages... s) requires(sizeof...(Stages) > 0) : stages_(std::move(s)...) {}

    // Samples one token from `logits` (one per vocabulary entry). Throws lmtk::error on empty
    // logits or if a filter removed every candidate; otherwise allocates nothing once the
    // buffer has grown to the vocabulary size.
    std::int32_t operator()(std::span<const float> logits, context& ctx) {
        namespace hana = boost::hana;
        bool checking = false;
        hana::for_each(stages_, [&](const auto& st) {
            if constexpr (checking_filter<std::remove_cvref_t<decltype(st)>>) checking |= bool(st.active());
        });
        if (checking) {
            const std::int32_t token = run(logits, ctx, true);
            bool ok = true;
            hana::for_each(stages_, [&](const auto& st) {
                if constexpr (checking_filter<std::remove_cvref_t<decltype(st)>>)
                    if (ok && st.active()) ok = bool(st.accepts(token));
            });
            if (ok) return token;
        }
        return run(logits, ctx, false);
    }

private:
    std::int32_t run(std::span<const float> logits, context& ctx, bool skip_checking) {
        namespace hana = boost::hana;
        if (logits.empty()) fail("sample::chain: no logits");
        if (logits.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
            fail("sample::chain: vocabulary of ", logits.size(), " entries exceeds int32 ids");
        buf_.resize(logits.size());
        for (std::size_t i = 0; i < logits.size(); ++i) {
            // NaN would break the strict weak order every sorting stage relies on.
            const float l = logits[i];
            buf_[i] = candidate{static_cast<std::int32_t>(i),
                                std::isnan(l) ? -std::numeric_limits<float>::infinity() : l, 0.0f};
        }
        std::span<candidate> c(buf_);
        constexpr auto last = hana::size_c<count - 1>;
        hana::for_each(hana::make_range(hana::size_c<0>, last), [&](auto i) {
            if constexpr (checking_filter<std::remove_cvref_t<decltype(hana::at(stages_, i))>>)
                if (skip_checking) return;
            const std::span<candidate> kept = hana::at(stages_, i)(c, ctx);
            assert(kept.empty() || (kept.data() >= c.data() && kept.data() + kept.size() <= c.data() + c.size()));
            c = kept;
        });
        if (c.empty()) fail("sample::chain: the filters removed every candidate");
        const std::int32_t token = hana::at(stages_, last)(c, ctx);
        first_ = static_cast<std::size_t>(c.data() - buf_.data());
        size_ = c.size();
        return token;
    }

public:

    // The candidates that reached the pick stage in the last call, with p = their softmax (the
    // distribution the token was drawn from); order unspecified. Empty before the first call;
    // valid until the next call.
    std::span<const candidate> last_candidates() const noexcept {
        return std::span<const candidate>(buf_.data() + first_, size_);
    }

    // A stage by type (must occur once) or by position, to change its parameters.
    template <class S>
    S& get() noexcept { return boost::hana::at(stages_, index_of<S>()); }
    template <class S>
    const S& get() const noexcept { return boost::hana::at(stages_, index_of<S>()); }
    template <std::size_t I>
    auto& get() noexcept { return boost::hana::at_c<I>(stages_); }
    template <std::size_t I>
    const auto& get() const noexcept { return boost::hana::at_c<I>(stages_); }

    static constexpr std::size_t size() noexcept { return count; }

private:
    template <class S>
    static constexpr auto index_of() {
        namespace hana = boost::hana;
        constexpr auto types = hana::tuple_t<Stages...>;
        static_assert(hana::count(types, hana::type_c<S>) == hana::size_c<1>,
                      "get<S>: S must appear exactly once in the chain; use get<I>() otherwise");
        if constexpr (hana::count(types, hana::type_c<S>) == hana::size_c<1>)
            return *hana::index_if(types, hana::equal.to(hana::type_c<S>));
        else
            return hana::size_c<0>;  // only reached after the assert above failed
    }

    boost::hana::tuple<Stages...> stages_;
    std::vector<candidate> buf_;
    std::size_t first_ = 0;  // last_candidates() = buf_[first_, first_ + size_)
    std::size_t size_ = 0;
};

}  // namespace lmtk::sample
