"""The agreement judge (`kubestill judge`): asks the baseline and the candidate the same mirrored request, compares
their answers per task (compare; ROUGE-L in kubestill.api.text_metrics, shared with the trainer) and exports the
counts Prometheus and the sequential tests read (metrics, server). Runs in the operator image; the operator itself
never imports it."""
