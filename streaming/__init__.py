"""The hot path: from "a tick reaches a web process" to "its frame reaches a socket".

hub (one channel-layer member per process) -> feed (per symbol: recent ticks,
subscribers, refills) -> subscription (per connection and symbol: pending -> live,
seq, mode) -> outbox (per connection, bounded) -> writer -> socket. The consumer
parses commands (protocol) and wires them to a connection. docs/architecture.md
tells why.
"""
