"""The learning side of hyperprior: spaces, families, meta-features, datasets and surrogate."""
