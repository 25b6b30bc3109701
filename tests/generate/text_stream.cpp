#include <catch2/catch.hpp>

#include <lmtk/generate/text_stream.hpp>

#include <string>
#include <vector>

using lmtk::text_stream;

namespace {
// Feeds pieces one by one; returns what was shown and whether a stop string ended it.
std::pair<std::string, bool> feed(text_stream& ts, const std::vector<std::string>& pieces) {
    std::string shown;
    for (const auto& p : pieces) {
        if (ts.push(p, shown)) return {shown, true};
    }
    ts.flush(shown);
    return {shown, false};
}
}  // namespace

TEST_CASE("text_stream passes plain text through", "[generate]") {
    text_stream ts;
    std::string out;
    CHECK_FALSE(ts.push("Once", out));
    CHECK(out == "Once");
    CHECK_FALSE(ts.push(" upon", out));
    CHECK(out == "Once upon");
}

TEST_CASE("text_stream holds back a UTF-8 character split across byte tokens", "[generate]") {
    text_stream ts;
    std::string out;
    // U+00E9 (C3 A9) and U+1F600 (F0 9F 98 80), arriving one byte at a time.
    CHECK_FALSE(ts.push("caf\xC3", out));
    CHECK(out == "caf");
    CHECK_FALSE(ts.push("\xA9 ", out));
    CHECK(out == "caf\xC3\xA9 ");
    for (const char* b : {"\xF0", "\x9F", "\x98"}) {
        CHECK_FALSE(ts.push(b, out));
        CHECK(out == "caf\xC3\xA9 ");
    }
    CHECK_FALSE(ts.push("\x80", out));
    CHECK(out == "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

TEST_CASE("text_stream stops at a stop string that spans pieces, showing only what precedes it", "[generate]") {
    text_stream ts({"\nUser:"});
    const auto [shown, stopped] = feed(ts, {"Hello", " there", "\nUs", "er", ": more"});
    CHECK(stopped);
    CHECK(shown == "Hello there");
}

TEST_CASE("text_stream releases a held-back prefix that did not become a stop string", "[generate]") {
    text_stream ts({"END"});
    std::string out;
    CHECK_FALSE(ts.push("the EN", out));
    CHECK(out == "the ");
    CHECK_FALSE(ts.push("ding", out));
    CHECK(out == "the ENding");
}

TEST_CASE("text_stream flushes an unfinished tail at the end", "[generate]") {
    text_stream ts({"STOP"});
    const auto [shown, stopped] = feed(ts, {"abc", "ST"});
    CHECK_FALSE(stopped);
    CHECK(shown == "abcST");
}

TEST_CASE("complete_utf8_prefix", "[generate]") {
    CHECK(text_stream::complete_utf8_prefix("") == 0);
    CHECK(text_stream::complete_utf8_prefix("abc") == 3);
    CHECK(text_stream::complete_utf8_prefix("ab\xE2\x82") == 2);
    CHECK(text_stream::complete_utf8_prefix("ab\xE2\x82\xAC") == 5);
    CHECK(text_stream::complete_utf8_prefix("\x80\x80") == 2);  // stray continuation bytes pass
}
