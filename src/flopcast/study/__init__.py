"""Studies: plans (TOML), what each stage runs and costs, the checks before anything is spent, fingerprints of
settings, the resumable stage runner and the report."""
