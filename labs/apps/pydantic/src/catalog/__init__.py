"""A catalog of pydantic v2 models."""
