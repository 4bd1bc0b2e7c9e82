"""Batched, grammar-constrained forecasting: the grammar as tensors, one batch of decoding on the device, and
forecasts (greedy or sampled) decoded back to values."""
