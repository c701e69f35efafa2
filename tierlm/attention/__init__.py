"""Attention backends: one interface, a torch-native implementation (CPU/CUDA) and a Triton one (CUDA)."""
