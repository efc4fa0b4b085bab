"""Soleil: a PostgreSQL-backed background job runner, and its reference booking application."""
