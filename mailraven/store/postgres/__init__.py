"""The PostgreSQL store (optional extra C{postgresql}): L{PostgresDatabase}."""
