"""The agent's loop: wiring and scheduling (agent), pending work (triggers), one pass's
I/O steps (passes), what the agent believes (view) and counts (metrics)."""
