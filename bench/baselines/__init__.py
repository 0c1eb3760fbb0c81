"""Baselines we compare against: the naive bring-your-own container most teams copy, and the in-process floor."""
