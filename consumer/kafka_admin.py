"""The Kafka administration the commands share: make a topic, read a group's committed offsets."""

from __future__ import annotations

from consumer.settings import Settings


def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    """Create `topic` with `partitions` partitions (replication factor 1), waiting for it."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(settings.kafka.client_config())
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    for future in futures.values():
        future.result(timeout=30)


def committed_offsets(settings: Settings, topic: str, group_id: str) -> dict[int, int]:
    """The group's committed offsets per partition (for tests, demo and bench summaries)."""
    from confluent_kafka import Consumer, TopicPartition

    client = Consumer(
        {**settings.kafka.client_config(), "group.id": group_id, "enable.auto.commit": False}
    )
    try:
        metadata = client.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        return {tp.partition: tp.offset for tp in client.committed(partitions, timeout=10)}
    finally:
        client.close()
