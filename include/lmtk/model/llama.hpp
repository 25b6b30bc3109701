#pragma once
// Llama-family transformer (Llama 1-3, Mistral, Qwen2, SmolLM...): weights bound in place from
// a GGUF mapping or an HF folder, and a context that owns the KV cache and every activation
// buffer and runs the forward pass.
//
//   llama<Set, Target>        immutable after load; shareable between contexts
//                             (llama_weights.hpp; repacking at load: repack.hpp)
//   llama_context<Model, KV>  KV caches + run state, allocated once; decode() runs tokens
//                             through the network and allocates nothing (llama_context.hpp;
//                             attention: attention.hpp; norms, RoPE, SwiGLU: ops.hpp)
#include <lmtk/model/llama_weights.hpp>
#include <lmtk/model/llama_context.hpp>
