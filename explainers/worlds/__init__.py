"""The two offline worlds: synthetic scenes and photo composites."""
