#pragma once
// The subcommands of the `lmtk` tool, one source file each (cmd_<name>.cpp).
#include <string>
#include <vector>

namespace lmtk::cli {
using argv_t = std::vector<std::string>;
int cmd_run(const argv_t& argv);
int cmd_tokenize(const argv_t& argv);
int cmd_eval(const argv_t& argv);
int cmd_perplexity(const argv_t& argv);
int cmd_bench(const argv_t& argv);
int cmd_gen_model(const argv_t& argv);
int cmd_convert(const argv_t& argv);
int cmd_export_tokenizer(const argv_t& argv);
int cmd_render_template(const argv_t& argv);
int cmd_quantize(const argv_t& argv);
int cmd_serve(const argv_t& argv);  // only with LMTK_CLI_HAVE_SERVE (the lmtk::serve target)
}  // namespace lmtk::cli
