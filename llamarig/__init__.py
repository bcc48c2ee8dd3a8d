"""llamarig: declared llama.cpp / ik_llama.cpp inference rigs. Pure logic, no pyinfra."""

__version__ = "0.1.0"
