"""A fresh topic on the test broker, for the retrain job's Kafka tests."""

from __future__ import annotations

import uuid

from kafka.admin import KafkaAdminClient, NewTopic


def new_topic(bootstrap: str, partitions: int, prefix: str = "t") -> str:
    """Create a topic with a random name and ``partitions`` partitions; returns its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name
