"""Example tool modules for assistants beyond the demo back office, each with its own policy."""
