"""Causal language models: loading them by name, their parts, LoRA adapters (PEFT), the LM heads and the training
loss flopcast uses, attention for decoding, and torch.compile."""
