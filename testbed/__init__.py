"""llamarig testbed: nspawn "rigs" with fake GPUs, a fake Hugging Face Hub,
a local git server and cached llama.cpp/GGUF sources.  No pyinfra import here."""
from .common import cache_dir  # noqa: F401
