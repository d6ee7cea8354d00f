"""MLflow models-from-code entry: the code of the registered `mnist-cnn` model (see serving.py)."""

from mlflow.models import set_model

from mnist_cnn.serving import make_python_model

set_model(make_python_model())
