"""A click command-line tool."""
