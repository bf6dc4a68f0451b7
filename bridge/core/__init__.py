"""The pure core: the data every layer speaks, the settings, the Protocols the adapters
hide behind, and the plan of a pass (reconcile, registration). Imports no adapter."""
