"""API keys: personal keys (acting for their owner, with at most the owner's rights) and
organisation keys (each with a service account of its own), sent as `Authorization: Bearer`."""
