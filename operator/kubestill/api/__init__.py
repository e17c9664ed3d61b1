"""The typed API of kubestill: pydantic models from which the CRDs are generated."""
