"""Where data comes from and goes: storage (local folders and buckets), sources (listing),
hashes (recording ids and their cache), outputs (the output tree), catalog (Parquet)."""
