"""The retrain job: recent normals (files, Kafka, analyst verdicts), a candidate, the gate, the promotion."""
