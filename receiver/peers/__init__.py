"""Adapters to the systems the receiver reads from (Alertmanager's API for now)."""
