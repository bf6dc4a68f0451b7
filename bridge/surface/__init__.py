"""What people and programs use: the CLI, the HTTP endpoints, doctor, logging, and the
ports' rows."""
