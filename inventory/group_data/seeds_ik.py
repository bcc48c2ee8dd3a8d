# ik_llama.cpp rigs of the seeds: the fork, its targets, the model they share.
build_fork = "ik_llama.cpp"
build_git_url = "https://github.com/ikawrakow/ik_llama.cpp"
build_targets = ["llama-server", "llama-sweep-bench", "llama-bench", "llama-gguf-split"]
build_cuda_architectures = [86]
models = {
    "glm47-ik": {"repo": "ubergarm/GLM-4.7-GGUF", "include": ["smol-IQ2_KS/*"],
                 "file": "smol-IQ2_KS/GLM-4.7-smol-IQ2_KS-00001-of-00003.gguf"},
}
