"""flopcast: FLOP-budgeted LoRA fine-tuning of small LMs for numeric time-series forecasting."""

__version__ = "0.1.0"
