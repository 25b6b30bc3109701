#pragma once
// Tokenizers over GGUF vocabularies. The libsentencepiece adapter,
// <lmtk/tokenize/sentencepiece.hpp>, is not included: it needs lmtk::sentencepiece to link.
#include <lmtk/tokenize/special_tokens.hpp>
#include <lmtk/tokenize/spm.hpp>
#include <lmtk/tokenize/vocab.hpp>
