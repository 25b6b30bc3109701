#pragma once
// What a route handler sees of HTTP: one parsed request, one response to fill, and, for a
// streamed response, a sink that writes the body piece by piece. The API front ends (openai.hpp,
// ollama.hpp, llamacpp.hpp) are written against these types only; transport.hpp moves them
// over the wire.
#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::serve::http {

inline bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

// Does a comma-separated header value (Connection, Upgrade) list `token`, case-insensitively?
inline bool has_token(std::string_view value, std::string_view token) noexcept {
    while (!value.empty()) {
        const std::size_t comma = value.find(',');
        std::string_view item = value.substr(0, comma);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
        if (iequals(item, token)) return true;
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
    return false;
}

struct request {
    std::string method;   // "GET", "POST", ... (HEAD is routed as GET, without a body in the answer)
    std::string target;   // as sent: path and query
    std::string path;     // target without the query
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string remote;   // "address:port" of the peer

    // The first header of that name (case-insensitive), or "" when absent.
    std::string header(std::string_view name) const {
        for (const auto& [k, v] : headers)
            if (iequals(k, name)) return v;
        return {};
    }
};

// Writes a streamed body. write() returns false once the client is gone (the write failed or
// timed out); alive() also notices a peer that closed while nothing was being written (waiting
// in the queue), so that its slot is freed.
struct body_sink {
    std::function<bool(std::string_view)> write;
    std::function<bool()> alive;
};

struct response {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string content_type = "text/plain";
    std::string body;
    // A streamed response: called after the status line and headers are sent (chunked), on the
    // thread that ran the handler; returns when the body is complete or the client left.
    std::function<void(body_sink&)> stream;

    void set_content(std::string b, std::string type) {
        body = std::move(b);
        content_type = std::move(type);
    }
    void set_header(std::string name, std::string value) {
        for (auto& [k, v] : headers)
            if (iequals(k, name)) {
                v = std::move(value);
                return;
            }
        headers.emplace_back(std::move(name), std::move(value));
    }
    void set_stream(std::string type, std::function<void(body_sink&)> s) {
        content_type = std::move(type);
        stream = std::move(s);
    }
};

using handler = std::function<void(const request&, response&)>;

// Exact-path routes per method.
class router {
public:
    // Runs before routing; returns false when it answered the request itself (authorization).
    std::function<bool(const request&, response&)> before;

    void get(const std::string& path, handler h) { routes_[{"GET", path}] = std::move(h); }
    void post(const std::string& path, handler h) { routes_[{"POST", path}] = std::move(h); }

    // The handler for this method and path; nullptr when none. `path_known` tells a 405 from a 404.
    const handler* find(std::string_view method, std::string_view path, bool* path_known = nullptr) const {
        const std::string m(method == "HEAD" ? "GET" : method);
        if (auto it = routes_.find({m, std::string(path)}); it != routes_.end()) return &it->second;
        if (path_known) {
            *path_known = false;
            for (const auto& [key, h] : routes_)
                if (key.second == path) *path_known = true;
        }
        return nullptr;
    }

private:
    std::map<std::pair<std::string, std::string>, handler> routes_;
};

}  // namespace lmtk::serve::http
