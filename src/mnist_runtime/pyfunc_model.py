"""MLflow models-from-code entry: the code of the registered `mnist-cnn` model (see pyfunc.py)."""

from mlflow.models import set_model

from mnist_runtime.pyfunc import MnistCnnModel

set_model(MnistCnnModel())
