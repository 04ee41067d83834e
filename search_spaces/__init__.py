"""The shipped search spaces (YAML), installed as package data of ``harness.search_spaces``."""
