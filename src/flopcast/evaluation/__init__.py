"""Scoring forecasts: the evaluation of a model and the baselines on a split, the metrics, the baselines
(persistence, linear drift, a fitted Lotka-Volterra ODE) and the figures."""
