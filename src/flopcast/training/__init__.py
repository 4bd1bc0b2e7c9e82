"""The LoRA training engine (:mod:`flopcast.training.engine`) and what it is built from: the step, the loss-read
rule, checkpoints, the run directory, signals, out-of-memory handling and the adapter's model card."""
