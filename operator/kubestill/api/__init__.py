"""The typed API of kubestill, the only part of the operator the trainer may import: the pydantic models the CRDs
are generated from (v1alpha1), and the operator <-> trainer contract: metrics.json (report), the one gate judge
(gates) and the shared names of environment variables, labels and annotations (names)."""
