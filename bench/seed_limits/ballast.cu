// Ballast: hold all of a GPU's free memory but KEEP_MIB, so that the next process sees a smaller card.
//
//   nvcc -O2 -o ballast ballast.cu && ./ballast [KEEP_MIB=24576] [DEVICE=0]
//
// Plain device memory (cudaMalloc, never managed memory), in chunks of at most 1 GiB until the
// device's free memory (cudaMemGetInfo, after this process's own context exists) is KEEP_MIB; each
// chunk is written once (cudaMemset) so that it is backed. Prints "READY free=... total=... held=..."
// (MiB) on stdout and sleeps until killed.
#include <cuda_runtime.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <vector>

static void die(const char *what, cudaError_t e) {
    fprintf(stderr, "ballast: %s: %s\n", what, cudaGetErrorString(e));
    exit(1);
}

int main(int argc, char **argv) {
    const size_t MiB = 1ull << 20;
    const size_t keep = (size_t)(argc > 1 ? atoll(argv[1]) : 24576) * MiB;
    const int dev = argc > 2 ? atoi(argv[2]) : 0;
    cudaError_t e = cudaSetDevice(dev);
    if (e != cudaSuccess) die("cudaSetDevice", e);
    e = cudaFree(0);  // create the context first: it takes memory too
    if (e != cudaSuccess) die("cudaFree(0)", e);
    size_t free_b = 0, total_b = 0;
    e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess) die("cudaMemGetInfo", e);
    fprintf(stderr, "ballast: device %d: free %zu MiB of %zu MiB, keeping %zu MiB\n",
            dev, free_b / MiB, total_b / MiB, keep / MiB);
    if (free_b <= keep) {
        fprintf(stderr, "ballast: only %zu MiB free, nothing to hold\n", free_b / MiB);
    }
    std::vector<void *> chunks;
    size_t held = 0;
    for (int guard = 0; guard < 100000; guard++) {
        e = cudaMemGetInfo(&free_b, &total_b);
        if (e != cudaSuccess) die("cudaMemGetInfo", e);
        if (free_b <= keep) break;
        size_t want = free_b - keep;
        if (want > 1024 * MiB) want = 1024 * MiB;
        if (want < 2 * MiB) break;  // the allocator's granularity: close enough
        void *p = nullptr;
        e = cudaMalloc(&p, want);
        if (e != cudaSuccess) {
            cudaGetLastError();
            if (want <= 2 * MiB) break;
            // fragmentation or rounding: try a smaller piece
            want /= 2;
            e = cudaMalloc(&p, want);
            if (e != cudaSuccess) { cudaGetLastError(); break; }
        }
        e = cudaMemset(p, 0, want);
        if (e != cudaSuccess) die("cudaMemset", e);
        chunks.push_back(p);
        held += want;
    }
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess) die("cudaDeviceSynchronize", e);
    e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess) die("cudaMemGetInfo", e);
    printf("READY free=%zu total=%zu held=%zu chunks=%zu\n", free_b / MiB, total_b / MiB, held / MiB, chunks.size());
    fflush(stdout);
    signal(SIGPIPE, SIG_IGN);
    for (;;) pause();
    return 0;
}
