"""Thing models: the shared language of the edge agent and the cloud registry."""
