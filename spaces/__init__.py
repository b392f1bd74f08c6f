"""Built-in search spaces."""
