"""Screening logic as plain Python: parsing, normalisation, rules, links, models, policy. No pyflink here."""
