"""What users call: the Python API (:class:`~flopcast.api.forecaster.Forecaster`, :func:`~flopcast.api.study
.run_study`, :func:`~flopcast.api.study.evaluate`, exported by ``flopcast`` itself) and the library call behind
every CLI command (:mod:`flopcast.api.tools` for data, FLOPs and budgets; ``forecast_file`` for forecasts)."""
