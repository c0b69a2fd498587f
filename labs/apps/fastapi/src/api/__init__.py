"""A FastAPI service: the app module, a router module, pydantic schemas."""
