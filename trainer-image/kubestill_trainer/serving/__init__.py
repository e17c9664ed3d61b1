"""Loading an exported student for serving (the Triton python backend's model.py uses this)."""
