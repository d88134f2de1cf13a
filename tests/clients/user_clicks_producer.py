"""The user-clickstream exercise's producer, in the original's style
(kafka-python, one `send` per click, values only).

    python user_clicks_producer.py [BOOTSTRAP] [COUNT]

BOOTSTRAP defaults to localhost:9092, as in the original. The clicks are
deterministic (user i*7 % 40 + 1, page i % 10 + 1) so that a test knows
the counts to expect.
"""
import sys

from kafka import KafkaProducer

bootstrap = sys.argv[1] if len(sys.argv) > 1 else "localhost:9092"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 600

producer = KafkaProducer(bootstrap_servers=bootstrap)
for i in range(count):
    user = i * 7 % 40 + 1
    line = f"User {user} clicked on /page{i % 10 + 1} at {1763719200 + i // 1000}.{i % 1000:03d}"
    producer.send("user_clickstream", value=line.encode())
producer.flush()
producer.close()
print(f"sent {count} clicks", file=sys.stderr)
