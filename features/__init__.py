"""Per-user features: profile look-ups through Feast, windowed behaviour features. No pyflink here."""
