"""The team's servers, run from one folder: PostgreSQL holding the MLflow tracking store, the
model registry and the Optuna studies, and an `mlflow server` in front of it. `mnist-cnn stack`
drives them; nothing in the ML pipeline (`mnist_cnn`) imports this package.

The folder holds `pgdata/` (the cluster), `artifacts/` (MLflow's artifacts), `logs/`, and
`stack.json`. Modules: `settings`, `postgres`, `mlflow_server`, `control` (up, down, status)."""
