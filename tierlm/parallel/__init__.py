"""Tensor parallelism: the rank group and the sharded layers models build from it."""
