#pragma once
// Tiny flag parser shared by the subcommands: "-m FILE", "--temp 0.8", "--no-bos". Unknown
// flags and missing or malformed values are lmtk::error with one clear line.
#include <lmtk/core/error.hpp>

#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::cli {

class args {
public:
    // `with_value`: flags that take a value (aliases separated by '|', e.g. "-m|--model").
    // `switches`: flags without a value.
    args(std::string_view command, const std::vector<std::string>& argv, std::vector<std::string> with_value,
         std::vector<std::string> switches = {})
        : command_(command) {
        std::map<std::string, std::string> canon;
        std::set<std::string> is_switch;
        auto add = [&](const std::string& spec, bool sw) {
            std::string first;
            std::size_t start = 0;
            while (start <= spec.size()) {
                const std::size_t bar = spec.find('|', start);
                std::string name = spec.substr(start, bar == std::string::npos ? std::string::npos : bar - start);
                if (first.empty()) first = name;
                canon[name] = first;
                if (sw) is_switch.insert(name);
                if (bar == std::string::npos) break;
                start = bar + 1;
            }
        };
        for (const auto& s : with_value) add(s, false);
        for (const auto& s : switches) add(s, true);
        for (std::size_t i = 0; i < argv.size(); ++i) {
            const std::string& a = argv[i];
            const auto it = canon.find(a);
            if (it == canon.end()) {
                if (!a.empty() && a[0] == '-') fail("lmtk ", command_, ": unknown option '", a, "' (see lmtk --help)");
                positional_.push_back(a);
                continue;
            }
            if (is_switch.count(a)) {
                values_[it->second] = "1";
            } else {
                if (i + 1 >= argv.size()) fail("lmtk ", command_, ": option '", a, "' needs a value");
                values_[it->second] = argv[++i];
            }
        }
    }

    bool has(const std::string& name) const { return values_.count(name) != 0; }
    std::optional<std::string> get(const std::string& name) const {
        const auto it = values_.find(name);
        if (it == values_.end()) return std::nullopt;
        return it->second;
    }
    std::string require(const std::string& name) const {
        auto v = get(name);
        if (!v) fail("lmtk ", command_, ": missing required option ", name);
        return *v;
    }
    template <class T>
    T number(const std::string& name, T fallback) const {
        auto v = get(name);
        if (!v) return fallback;
        T out{};
        const char* b = v->data();
        const char* e = b + v->size();
        const auto [p, ec] = std::from_chars(b, e, out);
        if (ec != std::errc() || p != e) fail("lmtk ", command_, ": option ", name, " expects a number, got '", *v, "'");
        return out;
    }
    const std::vector<std::string>& positional() const { return positional_; }

private:
    std::string command_;
    std::map<std::string, std::string> values_;
    std::vector<std::string> positional_;
};

}  // namespace lmtk::cli
