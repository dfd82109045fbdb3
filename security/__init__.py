"""Package placeholder: filled in by its own issue."""
