// llamarig's KV oracle: loads a (header-only) GGUF the way llama-fit-params does -- no_alloc, no
// tensor data read -- creates the context the flags describe, and prints llama.cpp's own sizing of
// every memory it would allocate. Built from the pinned llama.cpp tree in the test harness
// (testbed/oracle.py) against that tree's static libraries; its log is synchronous, so the loader's
// error (which tensor is missing, which shape it expected) is never lost as llama-fit-params' async
// log loses it when it aborts.
//
// usage: kv-oracle MODEL N_CTX N_SEQ TYPE_K TYPE_V N_UBATCH N_BATCH FLASH(0|1) SWA_FULL(0|1) KV_UNIFIED(0|1)
// stdout: "breakdown BUFT model context compute" lines (bytes), then "ok"
#include "llama.h"
#include "../src/llama-ext.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

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

int main(int argc, char ** argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s MODEL N_CTX N_SEQ TYPE_K TYPE_V N_UBATCH N_BATCH FLASH SWA_FULL KV_UNIFIED\n", argv[0]);
        return 2;
    }
    llama_log_set(log_sync, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.no_alloc  = true;
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
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
    cp.flash_attn_type = atoi(argv[8]) ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.swa_full   = atoi(argv[9]) != 0;
    cp.kv_unified = atoi(argv[10]) != 0;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        llama_model_free(model);
        return 4;
    }
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        printf("breakdown %s %zu %zu %zu\n", ggml_backend_buft_name(buft), mb.model, mb.context, mb.compute);
    }
    printf("ok\n");
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
