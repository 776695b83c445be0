"""Benchmarks of LoopCRM on real Kafka and PostgreSQL (issue 7); run as ``python -m bench...``."""
