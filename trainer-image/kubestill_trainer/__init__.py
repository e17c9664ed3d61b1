"""kubestill_trainer: the stages of a DistillationJob (label, train, evaluate, export), run as
`python -m kubestill_trainer <stage> --config FILE --workdir URI`.

Everything that needs torch lives here; from the operator side only `kubestill.api` is imported.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
