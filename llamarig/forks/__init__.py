"""What llama.cpp and ik_llama.cpp accept: their flags, aliases and --help."""
