"""`lifeguard bench …`: each benchmark prints its figures next to a baseline measured in the same run
(chat: the moderation job beside a trivial Kafka job; images, sessions, hostile input, the text cascade)."""
