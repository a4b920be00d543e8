"""The benchmark app: one message type, its no-op handler, and the views of every variant."""
