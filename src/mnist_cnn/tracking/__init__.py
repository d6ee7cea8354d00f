"""MLflow for the pipeline, one job a module: `store` (where runs go and the experiment),
`lineage` (which `dvc repro` and commit a run belongs to), `runs` (a stage's run and what it
logs) and `run_info` (models/run.json, the train run handed to evaluate and register)."""
