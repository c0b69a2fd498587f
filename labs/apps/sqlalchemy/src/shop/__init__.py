"""A tiny shop on SQLAlchemy 2 declarative models."""
