"""The serving check: a short closed-loop HTTP load on a StudentModel's own Service, run as a Job from the
operator image (`kubestill servecheck`); the operator reads its answer from the Job's termination message."""
