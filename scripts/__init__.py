"""Development scripts: services (Kafka, PostgreSQL, Redis without Docker) and test tools."""
