"""The review service: the PostgreSQL review store, its Kafka consumer, what verdicts send out, and the
reviewer console. It changes what Lifeguard does only through Kafka topics."""
