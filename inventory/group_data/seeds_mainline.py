# llama.cpp rigs of the seeds: built for the 3090's architecture.
build_cuda_architectures = [86]
