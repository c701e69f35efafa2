"""Triton kernels: KV store (slot scatter), split-KV decode attention, prefix+causal extend attention.

Importing this package imports Triton; callers that must run without it import lazily.
"""
