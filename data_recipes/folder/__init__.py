"""Folder recipe: bring your own domain with no code change."""
