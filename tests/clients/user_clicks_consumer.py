"""The user-clickstream exercise's consumer, in the original's style
(kafka-python, printing each value of `user_click_aggregation`).

    python user_clicks_consumer.py [BOOTSTRAP]

BOOTSTRAP defaults to localhost:9092, as in the original. Runs until
killed, like the original.
"""
import sys

from kafka import KafkaConsumer

bootstrap = sys.argv[1] if len(sys.argv) > 1 else "localhost:9092"
consumer = KafkaConsumer(
    "user_click_aggregation",
    bootstrap_servers=bootstrap,
    group_id="user-click-printer",
    auto_offset_reset="earliest",
)
for message in consumer:
    print(message.value.decode(), flush=True)
