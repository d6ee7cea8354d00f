"""Optuna tuning of the CNN, one module a job: `space` (the search space of params.yaml's
`tune:` section), `storage` (where the study lives, trial claims, dead workers), `trial` (one
trial as a nested MLflow run), `study` (workers and the parent run), `report` (progress, summary,
figures, MLflow logging) and `best` (the best params file and `--apply`)."""
