#pragma once
// Test helpers: write small safetensors files (and raw variants of them) without any library,
// so the tests control every byte: header padding (alignment), offsets, hostile headers.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>
#include "support/temp_dir.hpp"

namespace lmtk::test {

// A fresh folder per use, removed afterwards, so parallel runs never collide.
using scratch_dir = lmtk::test::temp_dir;

inline std::vector<std::byte> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> b(c.size());
    if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
    return b;
}

inline void write_bytes(const std::string& path, const std::vector<std::byte>& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
}

// u64le header length + header + data, as bytes.
inline std::vector<std::byte> safetensors_bytes(const std::string& header, const std::vector<std::byte>& data) {
    std::vector<std::byte> out(8 + header.size() + data.size());
    const std::uint64_t n = header.size();
    std::memcpy(out.data(), &n, 8);
    std::memcpy(out.data() + 8, header.data(), header.size());
    if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
    return out;
}

struct st_tensor {
    std::string name;
    std::string dtype;                 // "F32", "F16", "BF16", ...
    std::vector<std::uint64_t> shape;
    std::vector<std::byte> bytes;
};

template <class T>
std::vector<std::byte> as_bytes(const std::vector<T>& v) {
    std::vector<std::byte> b(v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
}

// A well-formed file: tensors in the given order, back to back. `header_pad` spaces after the
// JSON shift the data section, so tests can make tensor data misaligned on purpose.
inline void write_safetensors(const std::string& path, const std::vector<st_tensor>& tensors,
                              const std::string& metadata_json = R"({"format":"pt"})", std::size_t header_pad = 0) {
    std::string h = "{";
    if (!metadata_json.empty()) h += "\"__metadata__\":" + metadata_json;
    std::uint64_t off = 0;
    std::vector<std::byte> data;
    for (const st_tensor& t : tensors) {
        if (h.size() > 1) h += ",";
        h += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
        for (std::size_t i = 0; i < t.shape.size(); ++i) h += (i ? "," : "") + std::to_string(t.shape[i]);
        h += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + t.bytes.size()) + "]}";
        off += t.bytes.size();
        data.insert(data.end(), t.bytes.begin(), t.bytes.end());
    }
    h += "}";
    h.append(header_pad, ' ');
    write_bytes(path, safetensors_bytes(h, data));
}

}  // namespace lmtk::test
