"""Whole-slide access, tissue masks and prompt-guided detail feature completion (PGFC)."""
