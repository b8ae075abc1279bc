"""Every replica's in-memory breaker view, kept current by PostgreSQL LISTEN/NOTIFY."""
