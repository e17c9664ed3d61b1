"""kubestill: a Kubernetes operator for the knowledge-distillation lifecycle."""

__version__ = "0.1.0"
