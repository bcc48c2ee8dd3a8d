// llamarig's KV oracle for ik_llama.cpp (see kv_oracle.cpp): ik has no no_alloc load, so the (header-only,
// sparse) file is memory-mapped -- no tensor data is read -- and the context is created for real on the
// CPU, which allocates the KV cache ik sizes (small files, small contexts). Its log is synchronous.
//
// usage: kv-oracle-ik MODEL N_CTX N_SEQ TYPE_K TYPE_V N_UBATCH N_BATCH FLASH(0|1) MLA(0-3)
#include "llama.h"

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
    fprintf(stderr, "kv-oracle-ik: unknown cache type %s\n", name);
    exit(2);
}

int main(int argc, char ** argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: %s MODEL N_CTX N_SEQ TYPE_K TYPE_V N_UBATCH N_BATCH FLASH MLA\n", argv[0]);
        return 2;
    }
    llama_log_set(log_sync, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.use_mmap     = true;
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        return 3;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx      = (uint32_t) atoi(argv[2]);
    cp.n_seq_max  = (uint32_t) atoi(argv[3]);
    cp.type_k     = type_named(argv[4]);
    cp.type_v     = type_named(argv[5]);
    cp.n_ubatch   = (uint32_t) atoi(argv[6]);
    cp.n_batch    = (uint32_t) atoi(argv[7]);
    cp.flash_attn = atoi(argv[8]) != 0;
    cp.mla_attn   = atoi(argv[9]);
    cp.n_threads = cp.n_threads_batch = 1;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        llama_free_model(model);
        return 4;
    }
    printf("ok\n");
    llama_free(ctx);
    llama_free_model(model);
    return 0;
}
