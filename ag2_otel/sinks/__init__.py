"""Sinks that turn finished OTel spans into backend records. Import the submodules directly
(``ag2_otel.sinks.mlflow_processor``); importing this package does not import MLflow."""
