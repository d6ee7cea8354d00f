"""The registry gate on a real MLflow store: real digits from outside MNIST count, the report says
which rule decided, and every version carries a model card."""

from __future__ import annotations

import pytest

from mnist_cnn import model_card, registry
from mnist_cnn.config import RegisterParams

PARAMS = RegisterParams(model_name="gated", min_test_accuracy=0.9, real_digits_tolerance=0.005,
                        champion_alias="champion", challenger_alias="challenger", gate_stale_s=300)  # fmt: skip


def _metrics(test: float, real: float) -> dict[str, float]:
    return {"test_accuracy": test, "usps_accuracy": real, "test_ece": 0.004, "usps_ece": 0.02, "test_recall_digit_3": 0.98,
            "usps_accuracy_tight": real - 0.01, "usps_accuracy_framed": real + 0.01}  # fmt: skip


@pytest.mark.parametrize(
    ("metrics", "champion", "promoted", "rule"),
    [
        (_metrics(0.995, 0.985), None, True, "first"),
        (_metrics(0.85, 0.99), None, False, "min_test_accuracy"),
        (_metrics(0.997, 0.970), {"test_accuracy": 0.995, "usps_accuracy": 0.985}, False, "real_digits"),
        (
            _metrics(0.997, 0.981),
            {"test_accuracy": 0.995, "usps_accuracy": 0.985},
            True,
            "test_accuracy",
        ),  # within tolerance
        (_metrics(0.994, 0.990), {"test_accuracy": 0.995, "usps_accuracy": 0.985}, False, "test_accuracy"),
        (
            _metrics(0.996, 0.950),
            {"test_accuracy": 0.995, "usps_accuracy": None},
            True,
            "test_accuracy",
        ),  # champion unmeasured
    ],
)
def test_decide_names_the_rule(metrics, champion, promoted, rule):
    got, got_rule, reason = registry.decide(metrics, champion, PARAMS)
    assert (got, got_rule) == (promoted, rule), reason


def test_a_model_worse_on_real_digits_stays_challenger_despite_a_better_mnist_score(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("gate")

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    def register(metrics):
        with mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])

        def card(version, verdict):
            return model_card.render(PARAMS.model_name, version, metrics, {"temperature": 1.2, "train_seconds": 60},
                                     {"train": "ab" * 32}, "preset x", verdict)  # fmt: skip

        return run.info.run_id, registry.register(
            info.model_uri, run.info.run_id, metrics, {}, PARAMS, "preset x", card
        )

    try:
        _, first = register(_metrics(0.995, 0.985))
        run_id, second = register(_metrics(0.998, 0.960))
        client = mlflow.MlflowClient()
        assert (first["alias"], first["rule"]) == ("champion", "first")
        assert (second["alias"], second["promoted"], second["rule"]) == ("challenger", False, "real_digits")
        assert "usps_accuracy 0.9600" in second["reason"] and "0.9850" in second["reason"]
        assert int(client.get_model_version_by_alias("gated", "champion").version) == first["version"]
        version = client.get_model_version("gated", str(second["version"]))
        assert version.tags["usps_accuracy"] == "0.960000" and "test_recall_digit_3" not in version.tags
        assert "usps_accuracy 0.9600" in version.description and "@challenger" in version.description
        card = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
        assert card.startswith(f"# gated version {second['version']}")
        for line in ("| USPS test, all renderings", "| MNIST test |", "weakest USPS rendering: tight", "ab" * 32):
            assert line in card
    finally:
        mlflow.set_tracking_uri(None)
