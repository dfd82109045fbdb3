"""Storage engines of the registry behind one interface (see base.py)."""
