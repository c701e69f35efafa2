"""Model definitions (Llama, Qwen2, Qwen3) and weight loading."""
