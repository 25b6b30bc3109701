#pragma once
// lmtk: header-only toolkit for running large language models locally.
//
//   #include <lmtk/lmtk.hpp>
//
// brings in everything that needs no extra library: GGUF I/O, the tensor formats and their
// kernels, the Llama-family model, the native tokenizer, the samplers and the generation
// pipeline. The sentencepiece adapter (<lmtk/tokenize/sentencepiece.hpp>) is separate because
// it links libsentencepiece (CMake target lmtk::sentencepiece).
#include <lmtk/core/error.hpp>
#include <lmtk/core/fp16.hpp>
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/core/thread_pool.hpp>
#include <lmtk/core/tensor.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/io/gguf_writer.hpp>
#include <lmtk/io/safetensors.hpp>
#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>
#include <lmtk/model/hparams.hpp>
#include <lmtk/model/kv_cache.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/tokenize/tokenize.hpp>
#include <lmtk/tokenize/load.hpp>
#include <lmtk/sample/sample.hpp>
#include <lmtk/sample/json_constraint.hpp>
#include <lmtk/sample/gbnf.hpp>
#include <lmtk/sample/grammar.hpp>
#include <lmtk/sample/json_schema.hpp>
#include <lmtk/generate/timings.hpp>
#include <lmtk/generate/text_stream.hpp>
#include <lmtk/generate/piece_iterator.hpp>
#include <lmtk/generate/pipeline.hpp>
#include <lmtk/generate/batch_pipeline.hpp>
