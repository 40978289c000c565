"""SQL migrations of the PostgreSQL store, applied in order of their number."""
