"""Activities: the only place where Airlock touches the world (models, databases, files)."""
