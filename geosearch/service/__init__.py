"""`geosearch serve`: the engine behind an HTTP API."""
