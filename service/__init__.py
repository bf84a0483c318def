"""The hyperprior HTTP service and CLI."""
