"""Model and memory knowledge: GGUF headers, type sizes, memory per layer, where tensors go, the placement planner."""
