"""Kestrel streaming worker: consume events from Kafka, score them, publish anomalies.

Entry point: ``python -m worker --model MODEL_DIR`` (see :mod:`worker.__main__`).
"""
