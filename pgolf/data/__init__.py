"""Challenge data: shards, document sources, tokenizers, CaseOps, preparation and download."""
