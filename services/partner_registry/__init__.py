"""Partner registry: the effective-dated source of truth about countries, partners and agreements."""
