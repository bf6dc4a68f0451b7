"""The Docker engine adapter: one-call listings, inspects, the event stream and the
reconnecting watch."""
