#pragma once
// Tokenizers over GGUF vocabularies and Hugging Face tokenizer.json files; tokenizer.hpp's
// tokenize::tokenizer picks the right one. The libsentencepiece adapter,
// <lmtk/tokenize/sentencepiece.hpp>, is not included: it needs lmtk::sentencepiece to link.
#include <lmtk/tokenize/hf_export.hpp>
#include <lmtk/tokenize/jinja/template.hpp>
#include <lmtk/tokenize/pre_tokenizer.hpp>
#include <lmtk/tokenize/regex.hpp>
#include <lmtk/tokenize/special_tokens.hpp>
#include <lmtk/tokenize/spm.hpp>
#include <lmtk/tokenize/bpe.hpp>
#include <lmtk/tokenize/tokenizer.hpp>
#include <lmtk/tokenize/tokenizer_json.hpp>
#include <lmtk/tokenize/vocab.hpp>
