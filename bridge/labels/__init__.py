"""Container labels into a ServiceSpec or a LabelError: which containers, the endpoint
labels, the other values, the proxy-only labels. Pure; part of the core layer."""
