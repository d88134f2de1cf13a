//! weir connectors (Kafka, Parquet, HTTP ingress) arrive with the Kafka runtime issue.
