"""The supervisor: drives recorded runs to their end, surviving restarts."""
