"""KV memory: device pool, page allocator, request→token table, radix prefix cache (tiers build on these)."""
