"""Small shared helpers (tiny-model factory, logging)."""
