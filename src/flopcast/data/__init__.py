"""Time-series data: datasets and their splits, HDF5 and CSV files, DataFrames in and forecast tables out, and the
damped Lotka-Volterra simulator. No torch."""
