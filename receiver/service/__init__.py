"""Use cases. Each public function is one database transaction: it loads rows, calls the
pure domain, and writes rows, audit entries and outbox messages together."""
