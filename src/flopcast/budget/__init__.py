"""FLOPs: analytic counts per model component, what runs and evaluations cost, what a budget affords, and the
persistent ledger (with its leases and directory locks) that every FLOP is charged to. No torch."""
