"""The one cache root for every compiled artifact (imports no torch)."""
