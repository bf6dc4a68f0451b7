"""The port pool: allocator (rules), store (SQLite), durable (transactions), repair, work."""
