"""Accounts: API tokens and per-user preferences (the dashboard's watchlist)."""
