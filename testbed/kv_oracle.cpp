// llamarig's KV oracle: loads a (header-only) GGUF the way each fork sizes memory, creates the context the
// arguments describe, and prints the fork's own sizing. Built from a pinned tree in the test harness
// (testbed/oracle.py) against that tree's static libraries; its log is synchronous, so the loader's error
// (which tensor is missing, which shape it expected) is never lost as llama-fit-params' async log loses it
// when it aborts.
//
// llama.cpp (default): as llama-fit-params -- no_alloc, no tensor data read -- then the memory breakdown.
//   usage: kv-oracle MODEL N_CTX N_SEQ TYPE_K TYPE_V N_UBATCH N_BATCH FLASH(0|1) SWA_FULL(0|1) KV_UNIFIED(0|1)
//   stdout: "breakdown BUFT model context compute" lines (bytes), then "ok"
// ik_llama.cpp (-DLLAMARIG_IK): ik has no no_alloc load, so the sparse file is memory-mapped (no data read)
//   and the context is created for real on the CPU, which allocates the cache ik sizes (small files).
//   usage: kv-oracle MODEL N_CTX N_SEQ TYPE_K TYPE_V N_UBATCH N_BATCH FLASH(0|1) MLA(0-3)
#include "llama.h"
#ifndef LLAMARIG_IK
#include "../src/llama-ext.h"
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>

static void log_sync(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_DEBUG) {
        return;
    }
    fputs(text, stderr);
    fflush(stderr);
}

static ggml_type type_named(const char * name) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char * n = ggml_type_name((ggml_type) t);
        if (n && strcmp(n, name) == 0) {
            return (ggml_type) t;
        }
    }
    fprintf(stderr, "kv-oracle: unknown cache type %s\n", name);
    exit(2);
}

#ifdef LLAMARIG_IK
static const int N_ARGS = 10;
#else
static const int N_ARGS = 11;
#endif

int main(int argc, char ** argv) {
    if (argc != N_ARGS) {
        fprintf(stderr, "usage: %s MODEL N_CTX N_SEQ TYPE_K TYPE_V N_UBATCH N_BATCH FLASH %s\n", argv[0],
                N_ARGS == 10 ? "MLA" : "SWA_FULL KV_UNIFIED");
        return 2;
    }
    llama_log_set(log_sync, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
#ifdef LLAMARIG_IK
    mp.use_mmap     = true;
    mp.n_gpu_layers = 0;
#else
    mp.no_alloc  = true;
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
#endif
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        return 3;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx     = (uint32_t) atoi(argv[2]);
    cp.n_seq_max = (uint32_t) atoi(argv[3]);
    cp.type_k    = type_named(argv[4]);
    cp.type_v    = type_named(argv[5]);
    cp.n_ubatch  = (uint32_t) atoi(argv[6]);
    cp.n_batch   = (uint32_t) atoi(argv[7]);
#ifdef LLAMARIG_IK
    cp.flash_attn = atoi(argv[8]) != 0;
    cp.mla_attn   = atoi(argv[9]);
    cp.n_threads = cp.n_threads_batch = 1;
#else
    cp.flash_attn_type = atoi(argv[8]) ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.swa_full   = atoi(argv[9]) != 0;
    cp.kv_unified = atoi(argv[10]) != 0;
#endif
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        return 4;
    }
#ifndef LLAMARIG_IK
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        printf("breakdown %s %zu %zu %zu\n", ggml_backend_buft_name(buft), mb.model, mb.context, mb.compute);
    }
#endif
    printf("ok\n");
    llama_free(ctx);
    return 0;
}
