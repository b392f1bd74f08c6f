"""Built-in tasks (heads, losses, metrics) and datasets."""
