"""The trainer's stages, one module each: label, train, evaluate, export (plus their helpers).

Only the command line (`kubestill_trainer.cli`) imports a stage, and a stage composes what sits below it
(teachers, tasks, losses, storage, the report); `lint-imports` checks both (pyproject.toml). Nothing is
imported here: `cli` imports each stage lazily so `--help` and config errors do not pay for torch.
"""
