"""Domain code built on attrs and dataclasses."""
