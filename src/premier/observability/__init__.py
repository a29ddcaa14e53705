"""Observability: the events the gateway emits, and (later) their subscribers."""
