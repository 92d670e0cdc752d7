"""Vigil's read-model API: Starlette over the PostgreSQL read models; commands go to Kafka.

Built by `api.app.create_app`, which receives its settings, database engine and
producer, so tests and the benchmark run the very app that production serves.
"""
